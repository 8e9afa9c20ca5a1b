public import KMS
public import Logging
public import NIOPosix
public import PKCS11
import Synchronization

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

/// The tokens of custom key stores, through PKCS#11: one logged-in ``Token`` per connected store, and the
/// handles of its key objects cached (found once per connection, never per request).
///
/// Key objects Trent generates are persistent token objects: AES-256, sensitive, never extractable,
/// unmodifiable, labelled with the KMS key id and carrying its 16 bytes as `CKA_ID`.
public final class PKCS11CustomKeyStoreTokens: CustomKeyStoreTokens {
    private final class Connection: Sendable {
        let clusterID: String
        let token: Token
        let tagFailures: Set<PKCS11Error.ReturnValue>
        let restrictMechanisms: Bool
        let handles = Mutex<[TokenObjectSelector: ObjectHandle]>([:])

        init(clusterID: String, token: Token, profile: HSMProfile) throws {
            self.clusterID = clusterID
            self.token = token
            self.tagFailures = try profile.authenticationFailures()
            self.restrictMechanisms = profile.allowedMechanisms.enforced
        }
    }

    private let declarations: [String: CustomKeyStoreTokenDeclaration]
    private let threadPool: NIOThreadPool
    private let logger: Logger
    /// Modules stay loaded for the life of the process (by path): finalising one could end sessions another
    /// part of Trent holds on a token of the same module.
    private let modules = Mutex<[String: PKCS11Module]>([:])
    private let connections = Mutex<[String: Connection]>([:])

    /// The thread pool must be started; it is not owned.
    public init(declarations: [CustomKeyStoreTokenDeclaration], threadPool: NIOThreadPool, logger: Logger) {
        self.declarations = Dictionary(declarations.map { ($0.clusterID, $0) }, uniquingKeysWith: { first, _ in first })
        self.threadPool = threadPool
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
            return try await threadPool.runIfActive { [self] () -> CustomKeyStoreTokenAvailability in
                let module = try module(for: declaration)
                guard let slot = try module.slot(forTokenLabel: declaration.tokenLabel) else {
                    return .notActive("the module shows no initialised token labelled '\(declaration.tokenLabel)'")
                }
                let mechanisms = Set(try module.mechanisms(slot: slot))
                for needed in [MechanismType.aesKeyGen, .aesGCM] where !mechanisms.contains(needed) {
                    return .invalidConfiguration("the token lacks \(needed)")
                }
                return .active
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
        let pinText = String(decoding: pin, as: UTF8.self)
        do {
            let connection = try await threadPool.runIfActive { [self] () -> Connection in
                let module = try module(for: declaration)
                let token = try Token(module: module, label: declaration.tokenLabel, pin: PIN(pinText), maxIdleSessions: 16, gcm: declaration.profile.gcmConvention)
                return try Connection(clusterID: clusterID, token: token, profile: declaration.profile)
            }
            connections.withLock { $0[storeID] = connection }
            return nil
        } catch let error as PKCS11Error {
            logger.warning("custom key store token refused the connection", metadata: ["kms.custom_key_store.id": "\(storeID)", "pkcs11.error": "\(error)"])
            switch error.returnValue {
            case .pinIncorrect, .pinInvalid, .pinLenRange: return .invalidCredentials
            case .pinLocked: return .userLockedOut
            case .userPINNotInitialized: return .userNotFound
            case .tokenNotPresent, .slotIDInvalid, .tokenNotRecognized: return .clusterNotFound
            case .deviceError, .deviceRemoved, .deviceMemory: return .networkErrors
            default: return error.function == .loadModule || error.function == .initialize ? .networkErrors : .internalError
            }
        } catch {
            logger.warning("custom key store connection failed", metadata: ["kms.custom_key_store.id": "\(storeID)", "error": "\(error)"])
            return .internalError
        }
    }

    public func disconnect(storeID: String) async {
        guard let connection = connections.withLock({ $0.removeValue(forKey: storeID) }) else { return }
        _ = try? await threadPool.runIfActive { connection.token.close() }
    }

    public func isConnected(storeID: String) -> Bool { connections.withLock { $0[storeID] != nil } }

    // MARK: Keys

    public func generateKey(storeID: String, keyID: KeyID) async throws -> TokenObjectSelector {
        let selector = TokenObjectSelector.id(keyID.bytes)
        try await onToken(storeID, "generate a key in the custom key store") { connection in
            let template: [Attribute] = [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32),
                Attribute(.token, true), Attribute(.private, true), Attribute(.sensitive, true), Attribute(.extractable, false),
                Attribute(.modifiable, false), Attribute(.encrypt, true), Attribute(.decrypt, true), Attribute(.wrap, false),
                Attribute(.unwrap, false), Attribute(.sign, false), Attribute(.verify, false), Attribute(.derive, false),
                Attribute(.label, string: keyID.description), Attribute(.id, bytes: keyID.bytes),
            ] + (connection.restrictMechanisms ? [.allowedMechanisms([.aesGCM])] : [])
            let handle = try connection.token.withSession { session throws(PKCS11Error) in try session.generateKey(.aesKeyGen, template: template) }
            connection.handles.withLock { $0[selector] = handle }
        }
        return selector
    }

    public func findKey(storeID: String, xksKeyID: String) async throws -> TokenObjectSelector {
        try await onToken(storeID, "look up the external key") { connection -> TokenObjectSelector in
            var selector = TokenObjectSelector.label(xksKeyID)
            var found = try Self.find(selector, in: connection.token)
            if found.isEmpty, let id = Self.hexBytes(xksKeyID) {
                selector = .id(id)
                found = try Self.find(selector, in: connection.token)
            }
            guard let handle = found.first else {
                throw KMSError(.xksKeyNotFound, "The custom key store's token holds no secret key labelled '\(xksKeyID)' (nor with that CKA_ID in hex).")
            }
            guard found.count == 1 else {
                throw KMSError(.xksKeyInvalidConfiguration, "More than one secret key in the token matches '\(xksKeyID)'; give each key a unique label.")
            }
            let problem = try connection.token.withSession { session throws(PKCS11Error) in
                Self.unusableReason(handle, xksKeyID: xksKeyID, in: session)
            }
            if let problem { throw KMSError(.xksKeyInvalidConfiguration, problem) }
            connection.handles.withLock { $0[selector] = handle }
            return selector
        }
    }

    public func encrypt(storeID: String, object: TokenObjectSelector, plaintext: [UInt8], additionalData: [UInt8]) async throws -> SealedData {
        try await withKey(storeID, object, "encrypt") { session, handle throws(PKCS11Error) in
            let (iv, sealed) = try session.sealGCM(plaintext, key: handle, additionalData: additionalData)
            return SealedData(iv: iv, ciphertextAndTag: sealed)
        }
    }

    public func decrypt(storeID: String, object: TokenObjectSelector, sealed: SealedData, additionalData: [UInt8]) async throws -> [UInt8] {
        let tagFailures = connections.withLock { $0[storeID]?.tagFailures } ?? []
        do {
            return try await withKey(storeID, object, "decrypt") { session, handle throws(PKCS11Error) in
                try session.decrypt(sealed.ciphertextAndTag, key: handle, mechanism: .aesGCM(iv: sealed.iv, additionalData: additionalData))
            }
        } catch let error as KMSError where (error.cause as? PKCS11Error).map({ $0.function == .decrypt && tagFailures.contains($0.returnValue) }) == true {
            throw KMSError(.invalidCiphertext, "The ciphertext is invalid or was not produced by this service.")
        }
    }

    public func destroyKey(storeID: String, object: TokenObjectSelector) async throws {
        try await onToken(storeID, "destroy the key object") { connection in
            let cached = connection.handles.withLock { $0.removeValue(forKey: object) }
            let handles = try cached.map { [$0] } ?? Self.find(object, in: connection.token)
            try connection.token.withSession { session throws(PKCS11Error) in
                for handle in handles { try session.destroyObject(handle) }
            }
        }
    }

    public func generateRandom(storeID: String, count: Int) async throws -> [UInt8] {
        try await onToken(storeID, "generate random bytes") { connection in
            try connection.token.withSession { session throws(PKCS11Error) in try session.generateRandom(count: count) }
        }
    }

    // MARK: Steps

    private func module(for declaration: CustomKeyStoreTokenDeclaration) throws -> PKCS11Module {
        if let loaded = modules.withLock({ $0[declaration.modulePath] }) { return loaded }
        let module = try PKCS11Module(path: declaration.modulePath, initString: declaration.initString)
        return modules.withLock { loaded in
            if let existing = loaded[declaration.modulePath] { return existing }
            loaded[declaration.modulePath] = module
            return module
        }
    }

    private static func find(_ selector: TokenObjectSelector, in token: Token) throws -> [ObjectHandle] {
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

    /// Runs `body` with the cached handle of the key object, finding it on a miss; a handle gone stale is
    /// looked up once more.
    private func withKey<R: Sendable>(
        _ storeID: String, _ object: TokenObjectSelector, _ what: String,
        _ body: @escaping @Sendable (borrowing Session, ObjectHandle) throws(PKCS11Error) -> R
    ) async throws -> R {
        try await onToken(storeID, what) { connection in
            for attempt in 0..<2 {
                let handle: ObjectHandle
                if let cached = connection.handles.withLock({ $0[object] }) {
                    handle = cached
                } else {
                    let found = try Self.find(object, in: connection.token)
                    guard found.count == 1, let only = found.first else {
                        throw KMSError(
                            .keyUnavailable,
                            found.isEmpty ? "The key object is no longer in the custom key store's token." : "The custom key store's token holds more than one matching key object.")
                    }
                    connection.handles.withLock { $0[object] = only }
                    handle = only
                }
                do {
                    return try connection.token.withSession { session throws(PKCS11Error) in try body(session, handle) }
                } catch let error as PKCS11Error where attempt == 0 && (error.returnValue == .objectHandleInvalid || error.returnValue == .keyHandleInvalid) {
                    connection.handles.withLock { if $0[object] == handle { $0[object] = nil } }
                }
            }
            throw KMSError(.internalFailure, "The key object of the custom key store kept disappearing; retry the request.")
        }
    }

    /// Runs blocking work on a connected store's token, on the HSM thread pool; PKCS#11 failures become
    /// KMS errors (kept as the cause, so decrypt can tell a failed tag).
    private func onToken<R: Sendable>(_ storeID: String, _ what: String, _ work: @escaping @Sendable (Connection) throws -> R) async throws -> R {
        guard let connection = connections.withLock({ $0[storeID] }) else {
            throw KMSError(.invalidState, "The custom key store \(storeID) is not connected.")
        }
        do {
            return try await threadPool.runIfActive { try work(connection) }
        } catch let error as KMSError {
            throw error
        } catch let error as PKCS11Error {
            if !(error.function == .decrypt && connection.tagFailures.contains(error.returnValue)) {
                logger.error("custom key store token call failed", metadata: ["pkcs11.error": "\(error)", "kms.custom_key_store.id": "\(storeID)", "kms.hsm.task": "\(what)"])
            }
            throw KMSError(.internalFailure, "The custom key store's token could not \(what); the request can be retried.", cause: error)
        } catch {
            throw KMSError(.dependencyTimeout, "The custom key store's token is not available; the request can be retried.", cause: error)
        }
    }
}
