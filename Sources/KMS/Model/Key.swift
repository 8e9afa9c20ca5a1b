public import Foundation

/// The lifecycle states of a KMS key, spelled as the API spells them.
public enum KeyState: String, Sendable, Codable, CaseIterable {
    case creating = "Creating"
    case enabled = "Enabled"
    case disabled = "Disabled"
    case pendingDeletion = "PendingDeletion"
    /// A multi-Region primary key scheduled for deletion while it has replicas: its waiting period starts when the
    /// last of them is deleted.
    case pendingReplicaDeletion = "PendingReplicaDeletion"
    case pendingImport = "PendingImport"
    case unavailable = "Unavailable"
    case updating = "Updating"
}

public enum KeySpec: String, Sendable, Codable, CaseIterable {
    case symmetricDefault = "SYMMETRIC_DEFAULT"
    case rsa2048 = "RSA_2048", rsa3072 = "RSA_3072", rsa4096 = "RSA_4096"
    case eccNistP256 = "ECC_NIST_P256", eccNistP384 = "ECC_NIST_P384", eccNistP521 = "ECC_NIST_P521"
    case eccSecgP256k1 = "ECC_SECG_P256K1"
    case hmac224 = "HMAC_224", hmac256 = "HMAC_256", hmac384 = "HMAC_384", hmac512 = "HMAC_512"
    case sm2 = "SM2"
    case mlDSA44 = "ML_DSA_44", mlDSA65 = "ML_DSA_65", mlDSA87 = "ML_DSA_87"
    case eccNistEdwards25519 = "ECC_NIST_EDWARDS25519"
}

/// The MAC algorithms of HMAC keys, spelled as the API spells them.
public enum MacAlgorithm: String, Sendable, Codable, CaseIterable {
    case hmacSHA224 = "HMAC_SHA_224"
    case hmacSHA256 = "HMAC_SHA_256"
    case hmacSHA384 = "HMAC_SHA_384"
    case hmacSHA512 = "HMAC_SHA_512"

    /// Key length in bytes, as AWS sizes HMAC key material.
    public var keyLength: Int {
        switch self {
        case .hmacSHA224: 28
        case .hmacSHA256: 32
        case .hmacSHA384: 48
        case .hmacSHA512: 64
        }
    }
}

/// What a backing key is inside the token.
public enum BackingKeyKind: Sendable, Hashable {
    /// AES-256 for AES-GCM (symmetric encryption keys).
    case aes256
    /// A generic secret for one HMAC algorithm.
    case hmac(MacAlgorithm)
    /// The private half of an RSA or EC key pair; the public half is kept beside it in the clear.
    case keyPair(KeyPairSpec)
}

extension KeySpec {
    /// The MAC algorithm of an HMAC key spec.
    public var macAlgorithm: MacAlgorithm? {
        switch self {
        case .hmac224: .hmacSHA224
        case .hmac256: .hmacSHA256
        case .hmac384: .hmacSHA384
        case .hmac512: .hmacSHA512
        default: nil
        }
    }

    /// The key pair of an asymmetric key spec.
    public var keyPairSpec: KeyPairSpec? { KeyPairSpec(rawValue: rawValue) }

    /// The backing key Trent keeps for this spec, for the specs it serves.
    public var backingKeyKind: BackingKeyKind? {
        if self == .symmetricDefault { return .aes256 }
        if let pair = keyPairSpec { return .keyPair(pair) }
        return macAlgorithm.map(BackingKeyKind.hmac)
    }

    /// The key usages AWS allows for the spec.
    public var keyUsages: [KeyUsage] {
        if self == .symmetricDefault { return [.encryptDecrypt] }
        if macAlgorithm != nil { return [.generateVerifyMAC] }
        return keyPairSpec?.keyUsages ?? []
    }
}

public enum KeyUsage: String, Sendable, Codable, CaseIterable {
    case encryptDecrypt = "ENCRYPT_DECRYPT"
    case signVerify = "SIGN_VERIFY"
    case generateVerifyMAC = "GENERATE_VERIFY_MAC"
    case keyAgreement = "KEY_AGREEMENT"
}

public enum KeyOrigin: String, Sendable, Codable, CaseIterable {
    case awsKMS = "AWS_KMS"
    case external = "EXTERNAL"
    case awsCloudHSM = "AWS_CLOUDHSM"
    case externalKeyStore = "EXTERNAL_KEY_STORE"
}

/// A multi-Region key's role: the primary, whose Region replicas are made from, or a replica.
public enum MultiRegionKeyType: String, Sendable, Codable {
    case primary = "PRIMARY"
    case replica = "REPLICA"
}

public enum KeyManager: String, Sendable, Codable {
    case customer = "CUSTOMER"
    case aws = "AWS"
}

/// Everything Trent keeps about a KMS key except its wrapped material.
public struct KeyRecord: Sendable, Equatable {
    public var id: KeyID
    public var accountID: String
    /// The Region the key lives in: requests of other Regions do not find it.
    public var region: String
    public var creationDate: Date
    public var description: String
    public var keySpec: KeySpec
    public var keyUsage: KeyUsage
    public var origin: KeyOrigin
    public var keyManager: KeyManager
    public var state: KeyState
    public var deletionDate: Date?
    public var pendingWindowInDays: Int?
    public var policy: String
    /// The backing-key version new encryptions use.
    public var currentVersion: UInt32
    /// Automatic rotation, when enabled.
    public var rotationSchedule: RotationSchedule?
    /// Whether imported key material expires (keys of origin EXTERNAL that hold material).
    public var expirationModel: ExpirationModel?
    /// When imported key material expires and is deleted.
    public var validTo: Date?
    /// The key whose backing keys (and their nonce counts) this key uses: itself, or, for a replica of a
    /// multi-Region key, the related key the material was made for, so that related keys share one copy of it.
    public var materialOwner: KeyID
    /// A multi-Region key's role among its related keys; nil for a single-Region key.
    public var multiRegionKeyType: MultiRegionKeyType?

    public init(
        id: KeyID, accountID: String, region: String, creationDate: Date, description: String, keySpec: KeySpec, keyUsage: KeyUsage,
        origin: KeyOrigin, keyManager: KeyManager, state: KeyState, deletionDate: Date? = nil,
        pendingWindowInDays: Int? = nil, policy: String, currentVersion: UInt32, rotationSchedule: RotationSchedule? = nil,
        expirationModel: ExpirationModel? = nil, validTo: Date? = nil, materialOwner: KeyID? = nil,
        multiRegionKeyType: MultiRegionKeyType? = nil
    ) {
        self.materialOwner = materialOwner ?? id
        self.multiRegionKeyType = multiRegionKeyType
        self.expirationModel = expirationModel
        self.validTo = validTo
        self.rotationSchedule = rotationSchedule
        self.id = id
        self.accountID = accountID
        self.region = region
        self.creationDate = creationDate
        self.description = description
        self.keySpec = keySpec
        self.keyUsage = keyUsage
        self.origin = origin
        self.keyManager = keyManager
        self.state = state
        self.deletionDate = deletionDate
        self.pendingWindowInDays = pendingWindowInDays
        self.policy = policy
        self.currentVersion = currentVersion
    }

    public var isEnabled: Bool { state == .enabled }
    public var isMultiRegion: Bool { id.multiRegion != nil }

    public var encryptionAlgorithms: [String] {
        guard keyUsage == .encryptDecrypt else { return [] }
        if keySpec == .symmetricDefault { return ["SYMMETRIC_DEFAULT"] }
        return keySpec.keyPairSpec?.isRSA == true ? RSAEncryptionAlgorithm.allCases.map(\.rawValue) : []
    }

    public var macAlgorithms: [String] { keySpec.macAlgorithm.map { [$0.rawValue] } ?? [] }

    public var signingAlgorithms: [String] {
        guard keyUsage == .signVerify, let pair = keySpec.keyPairSpec else { return [] }
        return pair.signingAlgorithms.map(\.rawValue)
    }

    public var keyAgreementAlgorithms: [String] { keyUsage == .keyAgreement ? ["ECDH"] : [] }
}

/// When a key's material rotates automatically.
public struct RotationSchedule: Sendable, Equatable {
    public var periodInDays: Int
    public var nextRotationDate: Date

    public init(periodInDays: Int, nextRotationDate: Date) {
        self.periodInDays = periodInDays
        self.nextRotationDate = nextRotationDate
    }
}

/// Why a backing-key version exists beyond the first: a rotation (listed by ListKeyRotations) or, when nil,
/// an internal move to fresh material before the nonce budget ran out.
public enum RotationType: String, Sendable, Codable {
    case automatic = "AUTOMATIC"
    case onDemand = "ON_DEMAND"
}

/// A backing key (HSM backing key, HBK) version of a KMS key, as the store keeps it: only wrapped.
/// A key object in a custom key store's token.
public struct TokenObjectReference: Sendable, Equatable {
    public var storeID: String
    public var object: TokenObjectSelector

    public init(storeID: String, object: TokenObjectSelector) {
        self.storeID = storeID
        self.object = object
    }
}

public struct BackingKeyRecord: Sendable, Equatable {
    public var keyID: KeyID
    public var version: UInt32
    /// The exported key token: the backing key wrapped under the domain key, inside the token.
    public var wrappedKey: [UInt8]
    /// Proof, made by the backing key itself, that it belongs to `keyID` and `version` (see the provider).
    public var binding: [UInt8]
    /// Which domain key wrapped it.
    public var wrappingKeyLabel: String
    public var creationDate: Date
    /// Encryptions reserved so far under this version; the nonce budget is counted against it.
    public var noncesReserved: UInt64
    /// Set when a rotation made this version.
    public var rotationType: RotationType?
    /// The DER SubjectPublicKeyInfo of an asymmetric key's pair; nil for secret keys.
    public var publicKey: [UInt8]?
    /// For a key of a custom key store: its material is this object in the store's token, and the stored EKT is an
    /// empty placeholder. Not stored with the row; the service fills it in from the key's link to its store.
    public var tokenObject: TokenObjectReference?
    /// The key material id the API shows for this version (`KeyMaterialId`, `CurrentKeyMaterialId`).
    public var materialID: String
    /// What ImportKeyMaterial said of imported material (`KeyMaterialDescription`).
    public var materialDescription: String?
    /// Whether and when this version's imported material expires (the key's own fields are its current version's).
    public var expirationModel: ExpirationModel?
    public var validTo: Date?

    public init(
        keyID: KeyID, version: UInt32, wrappedKey: [UInt8], binding: [UInt8], wrappingKeyLabel: String,
        creationDate: Date, noncesReserved: UInt64 = 0, rotationType: RotationType? = nil, publicKey: [UInt8]? = nil,
        materialID: String = KeyMaterialID.make(), materialDescription: String? = nil, expirationModel: ExpirationModel? = nil,
        validTo: Date? = nil
    ) {
        self.expirationModel = expirationModel
        self.validTo = validTo
        self.materialID = materialID
        self.materialDescription = materialDescription
        self.publicKey = publicKey
        self.rotationType = rotationType
        self.keyID = keyID
        self.version = version
        self.wrappedKey = wrappedKey
        self.binding = binding
        self.wrappingKeyLabel = wrappingKeyLabel
        self.creationDate = creationDate
        self.noncesReserved = noncesReserved
    }
}

/// Key material ids: 64 lowercase hex digits, as AWS spells them. Each backing-key version gets a random one when it
/// is made; re-imported material keeps the id of the version it restores.
public enum KeyMaterialID {
    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }.hexString
    }

    /// Whether `text` has the form of a key material id (the model's BackingKeyIdType).
    public static func isWellFormed(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}

public struct AliasRecord: Sendable, Equatable {
    /// With its `alias/` prefix.
    public var name: String
    public var accountID: String
    /// Alias names are unique per account and Region, as in AWS.
    public var region: String
    public var targetKeyID: KeyID
    public var creationDate: Date
    public var lastUpdatedDate: Date

    public init(name: String, accountID: String, region: String, targetKeyID: KeyID, creationDate: Date, lastUpdatedDate: Date) {
        self.name = name
        self.accountID = accountID
        self.region = region
        self.targetKeyID = targetKeyID
        self.creationDate = creationDate
        self.lastUpdatedDate = lastUpdatedDate
    }
}

public struct Tag: Sendable, Equatable, Hashable {
    public var key: String
    public var value: String
    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }
}

/// Who is calling, as authentication established it. Every operation receives it; authorization evaluates
/// policies and grants for `principalARN`.
public struct Caller: Sendable, Equatable {
    /// The caller's account; empty for an integrated service calling on its own behalf.
    public var accountID: String
    public var principalARN: String
    public var principalKind: Principal.Kind
    public var accessKeyID: String
    public var sourceIP: String?
    public var userAgent: String?
    /// The integrated service that made this request on the caller's behalf (`kms:ViaService`).
    public var viaService: String?
    /// The Region of the request's SigV4 scope; nil for callers inside the process (CLI subcommands, tests), which
    /// act in the service's default Region.
    public var region: String?

    public init(
        accountID: String, principalARN: String, principalKind: Principal.Kind = .user, accessKeyID: String,
        sourceIP: String? = nil, userAgent: String? = nil, viaService: String? = nil, region: String? = nil
    ) {
        self.region = region
        self.accountID = accountID
        self.principalARN = principalARN
        self.principalKind = principalKind
        self.accessKeyID = accessKeyID
        self.sourceIP = sourceIP
        self.userAgent = userAgent
        self.viaService = viaService
    }
}

/// One page of a listing.
public struct Page<Item: Sendable>: Sendable {
    public var items: [Item]
    /// Present when more items follow; pass it back as the marker.
    public var nextMarker: String?
    public init(items: [Item], nextMarker: String?) {
        self.items = items
        self.nextMarker = nextMarker
    }
}
