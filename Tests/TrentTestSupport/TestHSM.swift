public import Foundation
public import KMS
public import KMSHSM
public import KMSSQLite
public import Logging
public import PKCS11
import Synchronization

/// One test token for the whole test process, in a folder of its own: SoftHSM 2 by default, NSS softoken with
/// `TRENT_TEST_HSM_PROFILE=nss-softoken`. The token's quirks come from its HSM profile (`Config/hsm/`).
///
/// A module reads its configuration once, in `C_Initialize`, and login state belongs to the process, so every
/// suite shares this token and isolates itself with fresh keys and labels. `TRENT_TEST_PKCS11_MODULE` overrides
/// the profile's module path.
public final class TestHSM: Sendable {
    public static let profileName = ProcessInfo.processInfo.environment["TRENT_TEST_HSM_PROFILE"] ?? "softhsm2"
    public static let profileDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Config/hsm")
    public static let tokenLabel = "trent-test"
    public static let domainKeyLabel = "trent-test-domain-key"
    public static let keyLabels = TokenKeyLabels(domainKey: domainKeyLabel, sealingKey: "trent-test-sealing-key")

    private static let instance: Result<TestHSM, any Error> = Result { try TestHSM() }

    /// The shared token. Fails every test that needs it, with the reason, when SoftHSM is missing.
    public static func shared() throws -> TestHSM { try instance.get() }

    public let directory: URL
    public let profile: HSMProfile
    public let module: PKCS11Module
    /// A plain connection, for tests that look into the token themselves.
    public let token: Token
    /// The connection providers use, as `trent serve` does (its own threads, deadline and recovery).
    public let hsmToken: HSMToken

    private init() throws {
        profile = try HSMProfile.find(Self.profileName, in: [Self.profileDirectory])
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("trent-tests-\(UUID().uuidString)")
        let modulePath = ProcessInfo.processInfo.environment["TRENT_TEST_PKCS11_MODULE"] ?? profile.defaultModule ?? ""
        let embedded = EmbeddedToken(profile: profile, directory: directory, label: Self.tokenLabel)
        module = try PKCS11Module(path: modulePath, initString: try embedded.prepare())
        try embedded.initialize(module, soPIN: { PIN("so-1234") }, userPIN: { PIN(Self.userPIN) })
        token = try Token(module: module, label: Self.tokenLabel, pin: PIN(Self.userPIN), gcm: profile.gcmConvention)
        try TokenKeys.ensure(in: token, labels: Self.keyLabels, profile: profile)
        try embedded.finishCreation()
        hsmToken = try Self.makeHSMToken(module: module, profile: profile, handleCacheCapacity: 10_000)
    }

    private static func makeHSMToken(module: PKCS11Module, profile: HSMProfile, handleCacheCapacity: Int) throws -> HSMToken {
        try HSMToken(
            module: module,
            settings: .init(
                name: "test token", label: tokenLabel, pin: PIN(userPIN), profile: profile, threads: 4, handleCacheCapacity: handleCacheCapacity,
                finalizesModule: false),
            logger: Logger(label: "trent.tests"), prepare: PKCS11KeyProvider.preparation(labels: keyLabels, profile: profile))
    }

    public static let userPIN = "user-1234"

    /// A new provider over the shared connection, or with `ownConnection` (as after a restart: nothing unwrapped yet)
    /// over a connection of its own whose working-key cache holds `handleCacheCapacity` keys. `profile` changes what
    /// the provider does, not the connection.
    public func makeProvider(
        ownConnection: Bool = false, handleCacheCapacity: Int = 10_000, profile: HSMProfile? = nil,
        customKeyStores: PKCS11CustomKeyStoreTokens? = nil
    ) throws -> PKCS11KeyProvider {
        let token = ownConnection ? try Self.makeHSMToken(module: module, profile: self.profile, handleCacheCapacity: handleCacheCapacity) : hsmToken
        return try PKCS11KeyProvider(
            token: token, configuration: .init(keyLabels: Self.keyLabels, profile: profile ?? self.profile), customKeyStores: customKeyStores,
            logger: Logger(label: "trent.tests"))
    }

    /// A path for a new SQLite file in this process's test folder.
    public func makeDatabasePath() -> String {
        directory.appendingPathComponent("store-\(UUID().uuidString).sqlite").path
    }

    /// A service over the shared token and a fresh SQLite file, whose account 111122223333 has an
    /// administrator, ``ServiceFixture/caller`` (a user whose identity policy allows every KMS action).
    public func makeService(
        clock: any KMSClock = SystemClock(), nonceBudget: UInt64 = 1 << 32, reservationBlock: UInt64 = 1 << 16,
        databasePath: String? = nil, provider: PKCS11KeyProvider? = nil,
        customKeyStoreTokens: any CustomKeyStoreTokens = NoCustomKeyStoreTokens(), regions: Set<String> = []
    ) async throws -> ServiceFixture {
        // A restart (a second service on the same file) starts with nothing unwrapped, as `trent serve` does.
        let provider = try provider ?? makeProvider(ownConnection: databasePath != nil, customKeyStores: customKeyStoreTokens as? PKCS11CustomKeyStoreTokens)
        let path = databasePath ?? makeDatabasePath()
        let store = try SQLiteMetadataStore(path: path)
        let service = KeyManagementService(
            configuration: .init(
                location: ServiceLocation(region: "us-east-1", regions: regions, accountID: "111122223333"), nonceBudget: nonceBudget,
                nonceReservationBlock: reservationBlock),
            provider: provider, store: store, clock: clock, logger: Logger(label: "trent.tests"), customKeyStoreTokens: customKeyStoreTokens)
        let directory = IdentityDirectory(store: store, provider: provider, clock: clock)
        _ = try await directory.bootstrapAdministrator(
            accountID: ServiceFixture.caller.accountID, principalARN: ServiceFixture.caller.principalARN, accessKey: (ServiceFixture.caller.accessKeyID, "test-secret"))
        return ServiceFixture(service: service, store: store, provider: provider, directory: directory, databasePath: path)
    }
}

public struct ServiceFixture: Sendable {
    public let service: KeyManagementService
    public let store: SQLiteMetadataStore
    public let provider: PKCS11KeyProvider
    public let directory: IdentityDirectory
    public let databasePath: String

    public static let caller = Caller(
        accountID: "111122223333", principalARN: "arn:aws:iam::111122223333:user/tester", accessKeyID: "AKIATESTTESTTEST0001")

    /// The bytes of the SQLite database and its write-ahead log, as they are on disk now.
    public func databaseBytes() -> [UInt8] {
        ["", "-wal"].flatMap { suffix in
            (FileManager.default.contents(atPath: databasePath + suffix)).map { Array($0) } ?? []
        }
    }
}

/// A clock the test moves by hand.
public final class ManualClock: KMSClock {
    private let current: Mutex<Date>
    public init(_ start: Date = Date()) { current = Mutex(start) }
    public func now() -> Date { current.withLock { $0 } }
    public func advance(by interval: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(interval) } }
}

extension Array where Element == UInt8 {
    /// Whether `needle` occurs anywhere in these bytes.
    public func containsSequence(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        let first = needle[0]
        var index = startIndex
        while let found = self[index...].firstIndex(of: first), found + needle.count <= endIndex {
            if Array(self[found..<found + needle.count]) == needle { return true }
            index = found + 1
        }
        return false
    }
}
