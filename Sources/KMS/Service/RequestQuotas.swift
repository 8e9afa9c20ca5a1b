import Foundation
public import JSON
import Synchronization

/// A token bucket: `rate` tokens a second, holding at most `burst`; a request takes one token or is refused.
/// Time is passed in (seconds on a monotonic clock) so tests can drive it.
public struct TokenBucket: Sendable, Equatable {
    public let rate: Double
    public let burst: Double
    public private(set) var tokens: Double
    private var updated: Double

    /// A bucket starts full: a client that was idle may send a burst at once.
    public init(rate: Double, burst: Double, now: Double) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now
    }

    /// Takes one token if there is one.
    public mutating func take(now: Double) -> Bool {
        if now > updated {
            tokens = min(burst, tokens + (now - updated) * rate)
            updated = now
        }
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

/// AWS KMS's request quotas: a token bucket per account and quota, refilled at the quota's rate (requests a
/// second) and holding one second's worth (at least one request), as AWS counts quotas per one-second interval.
///
/// A quota is either a shared class of cryptographic operations, named by the key type the request uses
/// (``symmetric``, ``rsa``, ``ecc``, ``customKeyStore``), or one operation's own quota, named by the operation
/// (`CreateKey`, `DescribeKey`, ...; `GenerateDataKeyPair_<KeyPairSpec>` for data key pairs). A quota without a
/// rate, or with rate 0, does not limit.
///
/// Buckets exist only for authenticated callers' accounts (bounded by the identity directory) and the fixed set
/// of quota names; they live in shards, each behind its own lock, so concurrent requests rarely wait on each other.
public final class RequestQuotas: Sendable {
    public static let symmetric = "symmetric"
    public static let rsa = "rsa"
    public static let ecc = "ecc"
    public static let customKeyStore = "customKeyStore"

    /// AWS's published default request quotas (requests a second, per account and Region), from the "Request
    /// quotas" page of the AWS KMS Developer Guide. The symmetric quota is AWS's base value; AWS sets it higher in
    /// some Regions (20,000 or 100,000).
    public static let awsDefaultRates: [String: Double] = [
        symmetric: 10_000, rsa: 1_000, ecc: 1_000, customKeyStore: 1_800,
        "CancelKeyDeletion": 5, "ConnectCustomKeyStore": 5, "CreateAlias": 5, "CreateCustomKeyStore": 5, "CreateGrant": 50,
        "CreateKey": 5, "DeleteAlias": 15, "DeleteCustomKeyStore": 5, "DeleteImportedKeyMaterial": 5, "DescribeCustomKeyStores": 5,
        "DescribeKey": 2_000, "DisableKey": 5, "DisableKeyRotation": 5, "DisconnectCustomKeyStore": 5, "EnableKey": 5,
        "EnableKeyRotation": 15,
        "GenerateDataKeyPair_ECC_NIST_P256": 25, "GenerateDataKeyPair_ECC_NIST_P384": 10, "GenerateDataKeyPair_ECC_NIST_P521": 5,
        "GenerateDataKeyPair_ECC_SECG_P256K1": 25, "GenerateDataKeyPair_RSA_2048": 1, "GenerateDataKeyPair_RSA_3072": 0.5,
        "GenerateDataKeyPair_RSA_4096": 0.1,
        "GetKeyPolicy": 1_000, "GetKeyRotationStatus": 1_000, "GetParametersForImport": 0.25, "GetPublicKey": 2_000,
        "ImportKeyMaterial": 5, "ListAliases": 500, "ListGrants": 100, "ListKeyPolicies": 100, "ListKeys": 500,
        "ListResourceTags": 2_000, "ListRetirableGrants": 100, "PutKeyPolicy": 15, "RetireGrant": 30, "RevokeGrant": 30,
        "ScheduleKeyDeletion": 15, "TagResource": 10, "UntagResource": 5, "UpdateAlias": 5, "UpdateCustomKeyStore": 5,
        "UpdateKeyDescription": 5,
    ]

    /// Every quota name a configuration may set.
    public static var quotaNames: Set<String> { Set(awsDefaultRates.keys) }

    /// Operations whose quota is the shared class of the key they use, known only once the key is found and the
    /// caller authorized for it (``QuotaGate``).
    static let keyClassedOperations: Set<String> = [
        "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateMac", "VerifyMac",
        "Sign", "Verify", "DeriveSharedSecret",
    ]

    /// How a request is counted.
    public enum Plan: Sendable, Equatable {
        /// Against this quota, before the operation runs.
        case quota(String)
        /// Against its key's class, once authorization allowed the key (``QuotaGate``).
        case byKey
        /// Not at all: AWS publishes no quota for the operation.
        case unlimited
    }

    /// Decides from the operation name and the request alone (never from a key), so the decision tells a caller
    /// nothing about keys.
    public static func plan(operation: String, request: JSONValue?) -> Plan {
        if keyClassedOperations.contains(operation) { return .byKey }
        switch operation {
        case "GenerateRandom":
            return .quota(symmetric)
        case "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext":
            // AWS gives each key pair spec its own quota; a spec that is not one fails validation and counts as symmetric.
            if case .string(let spec)? = request?["KeyPairSpec"], awsDefaultRates["GenerateDataKeyPair_\(spec)"] != nil {
                return .quota("GenerateDataKeyPair_\(spec)")
            }
            return .quota(symmetric)
        default:
            return awsDefaultRates[operation] != nil ? .quota(operation) : .unlimited
        }
    }

    /// The shared class of a key's cryptographic operations: HMAC keys count as symmetric, as AWS counts them.
    public static func quota(for key: KeyRecord) -> String {
        if key.origin == .awsCloudHSM || key.origin == .externalKeyStore { return customKeyStore }
        switch key.keySpec {
        case .rsa2048, .rsa3072, .rsa4096: return rsa
        case .eccNistP256, .eccNistP384, .eccNistP521, .eccSecgP256k1, .eccNistEdwards25519: return ecc
        default: return symmetric
        }
    }

    public static let throttled = KMSError(.throttling, "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.")

    /// AWS counts quotas per account and Region.
    private struct BucketKey: Hashable {
        var account: String
        var region: String
        var quota: String
    }

    private final class Shard: Sendable {
        let buckets = Mutex<[BucketKey: TokenBucket]>([:])
    }

    private let rates: [String: Double]
    private let accountRates: [String: [String: Double]]
    private let shards: [Shard]
    private let now: @Sendable () -> Double

    /// - Parameters:
    ///   - rates: requests a second by quota name; a name left out, or 0, does not limit.
    ///   - accountRates: per account id, rates that replace `rates` for that account.
    ///   - now: seconds on a monotonic clock.
    public init(
        rates: [String: Double], accountRates: [String: [String: Double]] = [:],
        now: @escaping @Sendable () -> Double = RequestQuotas.monotonicSeconds
    ) {
        self.rates = rates
        self.accountRates = accountRates
        self.shards = (0..<16).map { _ in Shard() }
        self.now = now
    }

    public static func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// The rate that applies to `account` for `quota`; nil when it does not limit.
    public func rate(account: String, quota: String) -> Double? {
        guard let rate = accountRates[account]?[quota] ?? rates[quota], rate > 0 else { return nil }
        return rate
    }

    /// Takes one request from `account`'s bucket for `quota` in `region`; false means: throttle it.
    /// - Parameters:
    ///   - account: an authenticated caller's account (never a claimed one: buckets are kept).
    ///   - region: a Region served (the signature verifier refused any other).
    public func admit(account: String, region: String, quota: String) -> Bool {
        guard let rate = rate(account: account, quota: quota) else { return true }
        let key = BucketKey(account: account, region: region, quota: quota)
        let shard = shards[Int(UInt(bitPattern: key.hashValue) % UInt(shards.count))]
        let time = now()
        return shard.buckets.withLock { buckets in
            var bucket = buckets[key] ?? TokenBucket(rate: rate, burst: max(1, rate), now: time)
            let admitted = bucket.take(now: time)
            buckets[key] = bucket
            return admitted
        }
    }

    /// Counts a request against `quota`, throwing ThrottlingException above the rate.
    public func charge(account: String, region: String, quota: String) throws(KMSError) {
        guard admit(account: account, region: region, quota: quota) else { throw Self.throttled }
    }
}

/// The quota step of one request whose quota depends on its key (``RequestQuotas/Plan/byKey``): the request is
/// counted once, against the class of the first key the authorizer allows the caller to use (so only a caller
/// allowed to use a key is ever answered according to its type). A request that ends before any key is allowed
/// (not found, denied, invalid) is counted against the symmetric class by ``finish(failed:)``.
public final class QuotaGate: Sendable {
    @TaskLocal public static var current: QuotaGate?

    let quotas: RequestQuotas
    let account: String
    let region: String
    private let counted = Atomic<Bool>(false)

    public init(quotas: RequestQuotas, account: String, region: String) {
        self.quotas = quotas
        self.account = account
        self.region = region
    }

    /// Called by the authorizer when it allows `key`: counts the request against the key's class, once.
    func allowed(_ key: KeyRecord) throws(KMSError) {
        guard counted.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        try quotas.charge(account: account, region: region, quota: RequestQuotas.quota(for: key))
    }

    /// After the operation: a request no key was allowed for counts as symmetric. Returns false when that bucket was
    /// empty: a failed request is then answered ThrottlingException, as if it had been throttled before the lookup.
    public func finish() -> Bool {
        guard counted.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return true }
        return quotas.admit(account: account, region: region, quota: RequestQuotas.symmetric)
    }
}
