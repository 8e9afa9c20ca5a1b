public import KMS
public import Logging
import PKCS11
import Synchronization
import Foundation
public import ServiceLifecycle

/// A PKCS#11 token the configuration offers to custom key stores, under a CloudHSM-style cluster id. The
/// API names tokens only by these ids, so it can never make Trent load a module the operator did not choose.
public struct CustomKeyStoreTokenDeclaration: Sendable {
    public var clusterID: String
    public var modulePath: String
    public var tokenLabel: String
    /// Passed to `C_Initialize` when this declaration is the first to load its module.
    public var initString: String?
    public var profile: HSMProfile
    /// When set, CreateCustomKeyStore's TrustAnchorCertificate must equal it (`IncorrectTrustAnchorException`).
    public var trustAnchorCertificate: String?

    public init(
        clusterID: String, modulePath: String, tokenLabel: String, initString: String? = nil, profile: HSMProfile,
        trustAnchorCertificate: String? = nil
    ) {
        self.clusterID = clusterID
        self.modulePath = modulePath
        self.tokenLabel = tokenLabel
        self.initString = initString
        self.profile = profile
        self.trustAnchorCertificate = trustAnchorCertificate
    }
}

/// The tokens of custom key stores, through PKCS#11: one ``HSMToken`` per connected store (its own small thread
/// pool, deadline, fault handling and recovery, as for Trent's own token), and the handles of its key objects
/// cached in its login (found once per login, never per request). Encryption and decryption with those objects
/// go through ``PKCS11KeyProvider``, the same code as for every other key.
///
/// Key objects Trent generates are persistent token objects: AES-256, sensitive, never extractable,
/// unmodifiable, labelled with the KMS key id and carrying its 16 bytes as `CKA_ID`.
public final class PKCS11CustomKeyStoreTokens: CustomKeyStoreTokens, Service {
    private let declarations: [String: CustomKeyStoreTokenDeclaration]
    private let settings: Settings
    private let logger: Logger
    private let connections = Mutex<[String: HSMToken]>([:])

    /// How each store's token runs its tasks.
    public struct Settings: Sendable {
        public var threads: Int
        public var queueDepth: Int
        /// Overrides the profile's deadline when set.
        public var callTimeout: Duration?

        public init(threads: Int = 2, queueDepth: Int = 64, callTimeout: Duration? = nil) {
            self.threads = threads
            self.queueDepth = queueDepth
            self.callTimeout = callTimeout
        }
    }

    public init(declarations: [CustomKeyStoreTokenDeclaration], settings: Settings = Settings(), logger: Logger) {
        self.declarations = Dictionary(declarations.map { ($0.clusterID, $0) }, uniquingKeysWith: { first, _ in first })
        self.settings = settings
        self.logger = logger
    }

    // MARK: Declarations

    public func isDeclared(_ clusterID: String) -> Bool { declarations[clusterID] != nil }

    public func relatedClusters(of clusterID: String) -> [String] {
        guard let declaration = declarations[clusterID] else { return [] }
        return declarations.values.filter { $0.modulePath == declaration.modulePath && $0.tokenLabel == declaration.tokenLabel }
            .map(\.clusterID).sorted()
    }

    public func trustAnchorMatches(_ clusterID: String, certificate: String) -> Bool {
        guard let declaration = declarations[clusterID] else { return false }
        guard let expected = declaration.trustAnchorCertificate else { return true }
        return Self.normalized(expected) == Self.normalized(certificate)
    }

    private static func normalized(_ pem: String) -> String { pem.filter { !$0.isWhitespace } }

    public func availability(of clusterID: String) async -> CustomKeyStoreTokenAvailability {
        guard let declaration = declarations[clusterID] else { return .notActive("cluster '\(clusterID)' is not declared") }
        do {
            return try await Self.offHSMThread { () throws -> CustomKeyStoreTokenAvailability in
                let shared = try SharedModule.open(path: declaration.modulePath, initString: declaration.initString)
                return try shared.gate.withReadLock { () throws -> CustomKeyStoreTokenAvailability in
                    guard let slot = try shared.module.slot(forTokenLabel: declaration.tokenLabel) else {
                        return .notActive("the module shows no initialised token labelled '\(declaration.tokenLabel)'")
                    }
                    let mechanisms = Set(try shared.module.mechanisms(slot: slot))
                    for needed in [MechanismType.aesKeyGen, .aesGCM] where !mechanisms.contains(needed) {
                        return .invalidConfiguration("the token lacks \(needed)")
                    }
                    return .active
                }
            }
        } catch {
            logger.warning("custom key store token is not available", metadata: ["kms.cluster.id": "\(clusterID)", "error": "\(error)"])
            return .notActive("its PKCS#11 module cannot be used")
        }
    }

    // MARK: Connections

    public func connect(storeID: String, clusterID: String, pin: [UInt8]) async -> CustomKeyStoreConnectionError? {
        guard let declaration = declarations[clusterID] else { return .clusterNotFound }
        await disconnect(storeID: storeID)
        let settings = HSMToken.Settings(
            name: "custom key store \(storeID)", label: declaration.tokenLabel, pin: PIN(String(decoding: pin, as: UTF8.self)),
            profile: declaration.profile, threads: self.settings.threads, queueDepth: self.settings.queueDepth,
            callTimeout: self.settings.callTimeout, maxIdleSessions: 16, handleCacheCapacity: 16, finalizesModule: false)
        do {
            let token = try await Self.offHSMThread { [logger] () throws -> HSMToken in
                let shared = try SharedModule.open(path: declaration.modulePath, initString: declaration.initString)
                return try HSMToken(module: shared.module, settings: settings, logger: logger)
            }
            connections.withLock { $0[storeID] = token }
            return nil
        } catch let error as PKCS11Error {
            logger.warning("custom key store token refused the connection", metadata: ["kms.custom_key_store.id": "\(storeID)", "pkcs11.error": "\(error)"])
            return Self.connectionError(error)
        } catch {
            logger.warning("custom key store connection failed", metadata: ["kms.custom_key_store.id": "\(storeID)", "error": "\(error)"])
            return .internalError
        }
    }

    /// The ConnectionErrorCode of a failed login (or of a token that stopped answering).
    static func connectionError(_ error: PKCS11Error) -> CustomKeyStoreConnectionError {
        switch error.returnValue {
        case .pinIncorrect, .pinInvalid, .pinLenRange: return .invalidCredentials
        case .pinLocked: return .userLockedOut
        case .userPINNotInitialized: return .userNotFound
        case .tokenNotPresent, .slotIDInvalid, .tokenNotRecognized: return .clusterNotFound
        case .deviceError, .deviceRemoved, .deviceMemory: return .networkErrors
        default: return error.function == .loadModule || error.function == .initialize ? .networkErrors : .internalError
        }
    }

    public func disconnect(storeID: String) async {
        guard let token = connections.withLock({ $0.removeValue(forKey: storeID) }) else { return }
        await token.close()
    }

    public func isConnected(storeID: String) -> Bool { connections.withLock { $0[storeID] != nil } }

    public func connectedStores() -> [String] { connections.withLock { Array($0.keys).sorted() } }

    /// A connected store whose token cannot be logged in again (it was removed, or its HSM stopped answering):
    /// FAILED with NETWORK_ERRORS until the token's own recovery brings it back.
    public func connectionFailure(storeID: String) -> CustomKeyStoreConnectionError? {
        token(of: storeID)?.state == .unavailable ? .networkErrors : nil
    }

    /// The token of a connected store.
    public func token(of storeID: String) -> HSMToken? { connections.withLock { $0[storeID] } }

    // MARK: Keys

    public func generateKey(storeID: String, keyID: KeyID) async throws -> TokenObjectSelector {
        let selector = TokenObjectSelector.id(keyID.bytes)
        let restrictMechanisms = try connectedToken(storeID).settings.profile.allowedMechanisms.enforced
        try await onToken(storeID, "generate a key in the custom key store") { login in
            let template: [Attribute] = [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32),
                Attribute(.token, true), Attribute(.private, true), Attribute(.sensitive, true), Attribute(.extractable, false),
                Attribute(.modifiable, false), Attribute(.encrypt, true), Attribute(.decrypt, true), Attribute(.wrap, false),
                Attribute(.unwrap, false), Attribute(.sign, false), Attribute(.verify, false), Attribute(.derive, false),
                Attribute(.label, string: keyID.description), Attribute(.id, bytes: keyID.bytes),
            ] + (restrictMechanisms ? [.allowedMechanisms([.aesGCM])] : [])
            let handle = try login.token.withSession { session throws(PKCS11Error) in try session.generateKey(.aesKeyGen, template: template) }
            login.setObject(handle, for: .tokenObject(selector))
        }
        return selector
    }

    public func findKey(storeID: String, xksKeyID: String) async throws -> TokenObjectSelector {
        try await onToken(storeID, "look up the external key") { login -> TokenObjectSelector in
            var selector = TokenObjectSelector.label(xksKeyID)
            var found = try Self.find(selector, in: login.token)
            if found.isEmpty, let id = Self.hexBytes(xksKeyID) {
                selector = .id(id)
                found = try Self.find(selector, in: login.token)
            }
            guard let handle = found.first else {
                throw KMSError(.xksKeyNotFound, "The custom key store's token holds no secret key labelled '\(xksKeyID)' (nor with that CKA_ID in hex).")
            }
            guard found.count == 1 else {
                throw KMSError(.xksKeyInvalidConfiguration, "More than one secret key in the token matches '\(xksKeyID)'; give each key a unique label.")
            }
            let problem = try login.token.withSession { session throws(PKCS11Error) in
                Self.unusableReason(handle, xksKeyID: xksKeyID, in: session)
            }
            if let problem { throw KMSError(.xksKeyInvalidConfiguration, problem) }
            login.setObject(handle, for: .tokenObject(selector))
            return selector
        }
    }

    public func destroyKey(storeID: String, object: TokenObjectSelector) async throws {
        try await onToken(storeID, "destroy the key object") { login in
            let cached = login.object(.tokenObject(object))
            login.setObject(nil, for: .tokenObject(object))
            let handles = try cached.map { [$0] } ?? Self.find(object, in: login.token)
            try login.token.withSession { session throws(PKCS11Error) in
                for handle in handles { try session.destroyObject(handle) }
            }
        }
    }

    public func generateRandom(storeID: String, count: Int) async throws -> [UInt8] {
        try await onToken(storeID, "generate random bytes") { login in
            try login.token.withSession { session throws(PKCS11Error) in try session.generateRandom(count: count) }
        }
    }

    // MARK: Service

    /// Until graceful shutdown: every second, what ``HSMToken/run()`` does for Trent's own token, for each store's
    /// token (an unavailable one is tried again, so a store whose HSM comes back is CONNECTED again by itself). Then
    /// disconnects every store.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: HSMToken.recoveryInterval)
                for token in self.connections.withLock({ Array($0.values) }) { await token.monitor() }
            }
        }
        for storeID in connectedStores() { await disconnect(storeID: storeID) }
    }

    // MARK: Steps

    /// The handle of a key object, found in the token and cached in the login: exactly one object must match.
    static func findUnique(_ selector: TokenObjectSelector, in login: HSMToken.Login) throws -> ObjectHandle {
        let found = try find(selector, in: login.token)
        guard found.count == 1, let only = found.first else {
            throw KMSError(
                .keyUnavailable,
                found.isEmpty ? "The key object is no longer in the custom key store's token." : "The custom key store's token holds more than one matching key object.")
        }
        login.setObject(only, for: .tokenObject(selector))
        return only
    }

    private static func find(_ selector: TokenObjectSelector, in token: Token) throws(PKCS11Error) -> [ObjectHandle] {
        let match: Attribute =
            switch selector {
            case .label(let label): Attribute(.label, string: label)
            case .id(let id): Attribute(.id, bytes: id)
            }
        return try token.withSession { session throws(PKCS11Error) in
            try session.findObjects(matching: [.objectClass(.secretKey), Attribute(.token, true), match], limit: 2)
        }
    }

    /// An external key must be AES-256, able to encrypt and decrypt, and sensitive (its value never readable).
    private static func unusableReason(_ handle: ObjectHandle, xksKeyID: String, in session: borrowing Session) -> String? {
        func flag(_ type: AttributeType) -> Bool { (try? session.attribute(type, of: handle))?.boolValue ?? false }
        let keyType = (try? session.attribute(.keyType, of: handle))?.ulongValue
        let length = (try? session.attribute(.valueLength, of: handle))?.ulongValue
        guard keyType == KeyType.aes.rawValue, length == 32 else { return "The key '\(xksKeyID)' is not an AES-256 key." }
        guard flag(.encrypt), flag(.decrypt) else { return "The key '\(xksKeyID)' is not allowed to encrypt and decrypt." }
        guard flag(.sensitive) else {
            return "The key '\(xksKeyID)' is not sensitive (CKA_SENSITIVE): its value could be read from the token."
        }
        return nil
    }

    private static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard !digits.isEmpty, digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index...index + 1], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }

    private func connectedToken(_ storeID: String) throws(KMSError) -> HSMToken {
        guard let token = token(of: storeID) else { throw KMSError(.invalidState, "The custom key store \(storeID) is not connected.") }
        return token
    }

    /// Runs blocking work on a connected store's token (``HSMToken/perform(_:answers:_:)``).
    private func onToken<R: Sendable>(_ storeID: String, _ what: String, _ work: @escaping @Sendable (HSMToken.Login) throws -> R) async throws -> R {
        try await connectedToken(storeID).perform("\(what)", work)
    }

    /// Loading a module and logging in block: done on a thread of their own, never on Swift's cooperative pool.
    private static func offHSMThread<R: Sendable>(_ work: @escaping @Sendable () throws -> R) async throws -> R {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
        }
    }
}
