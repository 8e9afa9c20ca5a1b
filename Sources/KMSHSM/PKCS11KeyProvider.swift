public import KMS
public import Logging
public import NIOPosix
public import PKCS11

/// The PKCS#11 key provider: backing keys are generated in the token, leave it only wrapped under the
/// domain key, and are used as non-extractable session objects unwrapped on demand and cached.
///
/// Every Cryptoki call runs on a dedicated thread pool (they block), never on Swift's cooperative pool,
/// and every call gets its own session from the token's pool.
public final class PKCS11KeyProvider: KeyProvider {
    public struct Configuration: Sendable {
        public var keyLabels: TokenKeyLabels
        /// The token's quirks: wrap mechanism, which codes mean a failed tag, whether to copy token keys.
        public var profile: HSMProfile
        /// How many backing-key versions stay unwrapped in the token at once.
        public var handleCacheCapacity: Int

        public init(keyLabels: TokenKeyLabels, profile: HSMProfile, handleCacheCapacity: Int = 10_000) {
            self.keyLabels = keyLabels
            self.profile = profile
            self.handleCacheCapacity = handleCacheCapacity
        }

        var domainKeyLabel: String { keyLabels.domainKey }
    }

    public let token: Token
    let configuration: Configuration
    let domainKey: ObjectHandle
    let sealingKey: ObjectHandle
    let rfc3394: MechanismType
    let tagFailureReturnValues: Set<PKCS11Error.ReturnValue>
    /// What `C_Verify` answers for a wrong signature on this token (the profile's `macFailureCodes`).
    let signatureFailureReturnValues: Set<PKCS11Error.ReturnValue>
    let threadPool: NIOThreadPool
    let cache: HandleCache
    /// Session objects of asymmetric keys' public halves, made from the stored SubjectPublicKeyInfo.
    let publicKeys: HandleCache
    let logger: Logger

    /// Finds the token keys. The thread pool must be started; the provider does not own it.
    /// - Throws: ``HSMSetupError`` when the token lacks them (run `trent token init`).
    public init(token: Token, configuration: Configuration, threadPool: NIOThreadPool, logger: Logger) throws {
        func find(_ label: String, _ role: String) throws -> ObjectHandle {
            guard let key = try TokenKeys.find(in: token, label: label) else {
                throw HSMSetupError("token '\(token.label)' has no \(role) labelled '\(label)': run `trent token init`")
            }
            return key
        }
        self.domainKey = try find(configuration.keyLabels.domainKey, "domain key")
        let sealingTokenKey = try find(configuration.keyLabels.sealingKey, "sealing key")
        self.rfc3394 = try configuration.profile.rfc3394Mechanism()
        self.tagFailureReturnValues = try configuration.profile.authenticationFailures()
        self.signatureFailureReturnValues = try configuration.profile.macFailures()
        // Tokens that re-read their storage on every use of a token key (NSS softoken) are far faster on a
        // session copy; the copy stays sensitive and non-extractable.
        if configuration.profile.copyTokenKeysToSession,
            let copy = try? token.withLongLivedSession({ session throws(PKCS11Error) in
                try session.copyObject(sealingTokenKey, template: [Attribute(.token, false)])
            })
        {
            self.sealingKey = copy
        } else {
            self.sealingKey = sealingTokenKey
        }
        self.token = token
        self.configuration = configuration
        self.threadPool = threadPool
        self.cache = HandleCache(capacity: configuration.handleCacheCapacity)
        self.publicKeys = HandleCache(capacity: configuration.handleCacheCapacity)
        self.logger = logger
    }

    // MARK: KeyProvider

    public func createBackingKey(for keyID: KeyID, version: UInt32, kind: BackingKeyKind) async throws -> BackingKeyMaterial {
        if case .keyPair(let spec) = kind { return try await createKeyPair(for: keyID, version: version, spec: spec) }
        let wrapMechanism = try wrapMechanism(for: kind)
        return try await onHSM("create a backing key") { [self] in
            try token.withSession { session throws(PKCS11Error) -> BackingKeyMaterial in
                // Generated extractable only so the token can wrap it; this copy is destroyed at once and the
                // working copies are unwrapped non-extractable.
                let fresh = try session.generateKey(
                    kind.generationMechanism, template: backingKeyTemplate(kind, extractable: true) + [Attribute(.valueLength, ulong: UInt(kind.keyLength))])
                defer { try? session.destroyObject(fresh) }
                let wrapped = try session.wrapKey(fresh, with: domainKey, mechanism: .keyWrap(wrapMechanism))
                let binding = try sealedBinding(keyID, version, wrappedKey: wrapped, in: session)
                return BackingKeyMaterial(wrappedKey: wrapped, binding: binding, wrappingKeyLabel: configuration.domainKeyLabel)
            }
        }
    }

    public func generateMac(_ message: [UInt8], under key: BackingKeyRecord, algorithm: MacAlgorithm) async throws -> [UInt8] {
        try await withWorkingKey(key, kind: .hmac(algorithm), "compute a MAC") { session, handle throws(PKCS11Error) in
            try session.sign(message, key: handle, mechanism: .hmac(algorithm.mechanism))
        }
    }

    /// Recomputes the MAC in the token and compares in constant time on the host: tokens disagree on what
    /// `C_Verify` returns for a wrong HMAC (SoftHSM: `CKR_SIGNATURE_INVALID`, NSS: `CKR_BUFFER_TOO_SMALL` or
    /// `CKR_DEVICE_ERROR`), and a MAC is no secret to the caller who sends it.
    public func verifyMac(_ message: [UInt8], mac: [UInt8], under key: BackingKeyRecord, algorithm: MacAlgorithm) async throws -> Bool {
        let expected = try await generateMac(message, under: key, algorithm: algorithm)
        guard expected.count == mac.count else { return false }
        return zip(expected, mac).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    public func encrypt(_ plaintext: [UInt8], under key: BackingKeyRecord, additionalData: [UInt8]) async throws -> SealedData {
        try await withWorkingKey(key, kind: .aes256, "encrypt") { session, handle throws(PKCS11Error) in
            let (iv, sealed) = try session.sealGCM(plaintext, key: handle, additionalData: additionalData)
            return SealedData(iv: iv, ciphertextAndTag: sealed)
        }
    }

    public func decrypt(_ sealed: SealedData, under key: BackingKeyRecord, additionalData: [UInt8]) async throws -> [UInt8] {
        do {
            return try await withWorkingKey(key, kind: .aes256, "decrypt") { session, handle throws(PKCS11Error) in
                try session.decrypt(sealed.ciphertextAndTag, key: handle, mechanism: .aesGCM(iv: sealed.iv, additionalData: additionalData))
            }
        } catch let error as PKCS11Error where error.function == .decrypt && tagFailureReturnValues.contains(error.returnValue) {
            throw KMSError(.invalidCiphertext, "The ciphertext is invalid or was not produced by this service.")
        }
    }

    public func generateRandom(count: Int) async throws -> [UInt8] {
        try await onHSM("generate random bytes") { [self] in
            try token.withSession { session throws(PKCS11Error) in try session.generateRandom(count: count) }
        }
    }

    public func seal(_ plaintext: [UInt8], additionalData: [UInt8]) async throws -> SealedData {
        try await onHSM("seal a secret") { [self] in
            try token.withSession { session throws(PKCS11Error) in
                let (iv, sealed) = try session.sealGCM(plaintext, key: sealingKey, additionalData: additionalData)
                return SealedData(iv: iv, ciphertextAndTag: sealed)
            }
        }
    }

    public func unseal(_ sealed: SealedData, additionalData: [UInt8]) async throws -> [UInt8] {
        do {
            return try await onHSM("unseal a secret") { [self] in
                try token.withSession { session throws(PKCS11Error) in
                    try session.decrypt(sealed.ciphertextAndTag, key: sealingKey, mechanism: .aesGCM(iv: sealed.iv, additionalData: additionalData))
                }
            }
        } catch let error as PKCS11Error where error.function == .decrypt && tagFailureReturnValues.contains(error.returnValue) {
            throw KMSError(.invalidCiphertext, "The sealed value is invalid or belongs to something else.")
        }
    }

    public func forget(_ keyID: KeyID) async {
        let handles = cache.removeAll(of: keyID) + publicKeys.removeAll(of: keyID)
        guard !handles.isEmpty else { return }
        _ = try? await onHSM("destroy working keys") { [self] in destroy(handles) }
    }

    /// Number of unwrapped backing keys held in the token (for tests and metrics).
    public var cachedKeyCount: Int { cache.count }

    // MARK: Working keys

    static let bindingPlaintext = Array("trent.backing-key.binding".utf8)

    /// What the binding proof authenticates: the key id and version a backing key was made for.
    static func bindingData(_ keyID: KeyID, _ version: UInt32) -> [UInt8] {
        var data = Array("trent.backing-key.v1".utf8) + keyID.bytes
        for shift in stride(from: 24, through: 0, by: -8) { data.append(UInt8((version >> UInt32(shift)) & 0xFF)) }
        return data
    }

    func backingKeyTemplate(_ kind: BackingKeyKind, extractable: Bool) -> [Attribute] {
        let common: [Attribute] = [
            .objectClass(.secretKey), Attribute(.token, false), Attribute(.private, true), Attribute(.sensitive, true),
            Attribute(.extractable, extractable), Attribute(.wrap, false), Attribute(.unwrap, false), Attribute(.derive, false),
        ]
        let restrict = configuration.profile.allowedMechanisms.enforced
        switch kind {
        case .aes256:
            return common + [.keyType(.aes), Attribute(.encrypt, true), Attribute(.decrypt, true), Attribute(.sign, false), Attribute(.verify, false)]
                + (restrict ? [.allowedMechanisms([.aesGCM])] : [])
        case .hmac(let algorithm):
            return common + [.keyType(.genericSecret), Attribute(.sign, true), Attribute(.verify, true), Attribute(.encrypt, false), Attribute(.decrypt, false)]
                + (restrict ? [.allowedMechanisms([algorithm.mechanism])] : [])
        case .keyPair(let spec):
            return privateKeyTemplate(spec, extractable: extractable)
        }
    }

    /// AES-256 keys wrap with RFC 3394; HMAC keys (28 bytes for HMAC_224) and private keys (PKCS#8 inside)
    /// need RFC 5649's padding.
    func wrapMechanism(for kind: BackingKeyKind) throws -> MechanismType {
        switch kind {
        case .aes256: return rfc3394
        case .hmac, .keyPair:
            guard let code = configuration.profile.keyWrap.rfc5649, let mechanism = MechanismType(name: code) else {
                throw KMSError(.unsupportedOperation, "This HSM (profile '\(configuration.profile.name)') has no RFC 5649 key wrap, which HMAC and asymmetric keys need.")
            }
            return mechanism
        }
    }

    /// The binding of a secret backing key (AES or HMAC): the token's sealing key seals a fixed plaintext with the
    /// key id, version and a hash of the EKT as additional data, tagged with ``sealedBindingTag``. Made by the sealing
    /// key, not by the backing key itself: a caller allowed to use one key (GenerateMac computes an HMAC of any
    /// data) could otherwise compute another key's proof for a copied EKT.
    func sealedBinding(_ keyID: KeyID, _ version: UInt32, wrappedKey: [UInt8], in session: borrowing Session) throws(PKCS11Error) -> [UInt8] {
        let (iv, proof) = try session.sealGCM(
            Self.bindingPlaintext, key: sealingKey, additionalData: Self.sealedBindingData(keyID, version, wrappedKey: wrappedKey))
        return [Self.sealedBindingTag] + iv + proof
    }

    /// Marks the sealing-key binding of secret keys: 1 + 12 + 41 bytes, a length no earlier binding had (an AES
    /// self-proof is 53 bytes, an HMAC one the MAC's length).
    static let sealedBindingTag: UInt8 = 0x02
    static let sealedBindingLength = 1 + Mechanism.gcmIVLength + bindingPlaintext.count + 16

    static func sealedBindingData(_ keyID: KeyID, _ version: UInt32, wrappedKey: [UInt8]) -> [UInt8] {
        bindingData(keyID, version) + Array("trent.secret-key.v2".utf8) + AsymmetricEncoding.hash(wrappedKey, .sha256)
    }

    /// Whether `binding` is the sealing key's proof for this key id, version and EKT.
    func verifySealedBinding(_ binding: [UInt8], _ keyID: KeyID, _ version: UInt32, wrappedKey: [UInt8]) -> Bool {
        guard Self.hasSealedBinding(binding) else { return false }
        let iv = Array(binding[1...Mechanism.gcmIVLength])
        let proof = Array(binding.dropFirst(1 + Mechanism.gcmIVLength))
        let data = Self.sealedBindingData(keyID, version, wrappedKey: wrappedKey)
        let opened = try? token.withSession { session throws(PKCS11Error) in
            try session.decrypt(proof, key: sealingKey, mechanism: .aesGCM(iv: iv, additionalData: data))
        }
        return opened == Self.bindingPlaintext
    }

    static func hasSealedBinding(_ binding: [UInt8]) -> Bool {
        binding.count == sealedBindingLength && binding.first == sealedBindingTag
    }

    /// The proof earlier versions made with the backing key itself: an AES key sealed a fixed plaintext with the key
    /// id and version as AAD; an HMAC key MACed them. Checked only to carry such keys over to the sealed binding
    /// (``rebind(_:kind:)``) and to compare re-imported material with material deleted before the change.
    func verifyLegacyBinding(_ handle: ObjectHandle, kind: BackingKeyKind, _ key: BackingKeyRecord) -> Bool {
        let data = Self.bindingData(key.keyID, key.version)
        switch kind {
        case .aes256:
            guard key.binding.count > Mechanism.gcmIVLength else { return false }
            let iv = Array(key.binding.prefix(Mechanism.gcmIVLength))
            let proof = Array(key.binding.dropFirst(Mechanism.gcmIVLength))
            let opened = try? token.withSession { session throws(PKCS11Error) in
                try session.decrypt(proof, key: handle, mechanism: .aesGCM(iv: iv, additionalData: data))
            }
            return opened == Self.bindingPlaintext
        case .hmac(let algorithm):
            let verified: Void? = try? token.withSession { session throws(PKCS11Error) in
                try session.verify(data, signature: key.binding, key: handle, mechanism: .hmac(algorithm.mechanism))
            }
            return verified != nil
        case .keyPair:
            return false
        }
    }

    /// Carries a backing key with a legacy self-made binding over to the sealed binding, once, when the store is
    /// upgraded: nil when its legacy proof does not hold (the key stays unusable).
    public func rebind(_ key: BackingKeyRecord, kind: BackingKeyKind) async throws -> [UInt8]? {
        guard !key.wrappedKey.isEmpty else { return nil }
        let mechanism = try wrapMechanism(for: kind)
        return try await onHSM("carry a backing key over to the sealed binding") { [self] () throws -> [UInt8]? in
            let handle = try token.withSession { session throws(PKCS11Error) in
                try session.unwrapKey(key.wrappedKey, with: domainKey, mechanism: .keyWrap(mechanism), template: backingKeyTemplate(kind, extractable: false))
            }
            defer { destroy([handle]) }
            guard verifyLegacyBinding(handle, kind: kind, key) else { return nil }
            return try token.withSession { session throws(PKCS11Error) in
                try sealedBinding(key.keyID, key.version, wrappedKey: key.wrappedKey, in: session)
            }
        }
    }

    /// Runs `body` with the session-object handle of `key`'s working copy, unwrapping it on a cache miss. A
    /// handle evicted by another thread mid-use is reloaded once.
    func withWorkingKey<R: Sendable>(
        _ key: BackingKeyRecord, kind: BackingKeyKind, _ what: String,
        _ body: @escaping @Sendable (borrowing Session, ObjectHandle) throws(PKCS11Error) -> R
    ) async throws -> R {
        try await onHSM(what) { [self] in
            let id = HandleCache.VersionID(keyID: key.keyID, version: key.version)
            for attempt in 0..<2 {
                let handle = try cache.handle(for: id) ?? load(key, kind: kind, id)
                do {
                    return try token.withSession { session throws(PKCS11Error) in try body(session, handle) }
                } catch let error as PKCS11Error where attempt == 0 && (error.returnValue == .objectHandleInvalid || error.returnValue == .keyHandleInvalid) {
                    _ = cache.remove(id, ifHandle: handle)
                }
            }
            throw KMSError(.internalFailure, "The working copy of a backing key kept disappearing; retry the request.")
        }
    }

    /// Unwraps an EKT into a non-extractable session object and proves it is the key made for this key id and
    /// version before anyone uses it: an EKT copied onto another key's row fails here.
    private func load(_ key: BackingKeyRecord, kind: BackingKeyKind, _ id: HandleCache.VersionID) throws -> ObjectHandle {
        guard key.wrappingKeyLabel == configuration.domainKeyLabel else {
            throw KMSError(.internalFailure, "Backing key \(key.version) of \(key.keyID) is wrapped under domain key '\(key.wrappingKeyLabel)', which this node does not use.")
        }
        // The binding is the sealing key's proof over the stored bytes: checked before they reach the token at all.
        guard verifyBinding(kind: kind, key) else {
            logger.error("refused a wrapped backing key that is not bound to its key", metadata: [
                "kms.key.id": "\(key.keyID)", "kms.backing_key.version": "\(key.version)",
            ])
            throw KMSError(.internalFailure, "The stored backing key of \(key.keyID) version \(key.version) does not belong to it; refusing to use it.")
        }
        let mechanism = try wrapMechanism(for: kind)
        let template = try unwrapTemplate(kind, for: key)
        let handle = try token.withLongLivedSession { session throws(PKCS11Error) in
            try session.unwrapKey(key.wrappedKey, with: domainKey, mechanism: .keyWrap(mechanism), template: template)
        }
        let (use, stale) = cache.insert(handle, for: id)
        destroy(stale)
        return use
    }

    /// Only the sealing key's proofs are accepted: keys bound the earlier way are carried over when the store is
    /// upgraded (``rebind(_:kind:)``), and until then refused.
    func verifyBinding(kind: BackingKeyKind, _ key: BackingKeyRecord) -> Bool {
        switch kind {
        case .aes256, .hmac:
            return verifySealedBinding(key.binding, key.keyID, key.version, wrappedKey: key.wrappedKey)
        case .keyPair:
            return verifyKeyPairBinding(key)
        }
    }

    func destroy(_ handles: [ObjectHandle]) {
        guard !handles.isEmpty else { return }
        try? token.withSession { session throws(PKCS11Error) in
            for handle in handles { try? session.destroyObject(handle) }
        }
    }

    /// Runs blocking Cryptoki work on the HSM thread pool and translates PKCS#11 failures into KMS errors;
    /// `answers` turns the failures that answer the request (a curve the token lacks, material of the wrong
    /// size) into the caller's error instead of a device fault.
    func onHSM<R: Sendable>(
        _ what: String, answers: (PKCS11Error) -> KMSError? = { _ in nil }, _ work: @escaping @Sendable () throws -> R
    ) async throws -> R {
        do {
            return try await threadPool.runIfActive(work)
        } catch let error as KMSError {
            throw error
        } catch let error as PKCS11Error {
            if let answer = answers(error) { throw answer }
            // Authentication failures are answers, not faults: the caller turns them into AWS errors.
            if error.function == .decrypt && tagFailureReturnValues.contains(error.returnValue) { throw error }
            logger.error("HSM call failed", metadata: ["pkcs11.error": "\(error)", "kms.hsm.task": "\(what)"])
            throw KMSError(.internalFailure, "The HSM could not \(what); the request can be retried.", cause: error)
        } catch {
            logger.error("HSM work failed", metadata: ["error": "\(error)", "kms.hsm.task": "\(what)"])
            throw KMSError(.dependencyTimeout, "The HSM is not available; the request can be retried.", cause: error)
        }
    }
}

extension BackingKeyKind {
    var generationMechanism: Mechanism {
        switch self {
        case .aes256: .aesKeyGen
        case .hmac: .genericSecretKeyGen
        case .keyPair(let spec): spec.isRSA ? .rsaKeyPairGen : .ecKeyPairGen
        }
    }

    /// `CKA_VALUE_LEN` of a secret backing key.
    var keyLength: Int {
        switch self {
        case .aes256: 32
        case .hmac(let algorithm): algorithm.keyLength
        case .keyPair: preconditionFailure("key pairs have no CKA_VALUE_LEN; createKeyPair generates them")
        }
    }
}

extension MacAlgorithm {
    var mechanism: MechanismType {
        switch self {
        case .hmacSHA224: .sha224HMAC
        case .hmacSHA256: .sha256HMAC
        case .hmacSHA384: .sha384HMAC
        case .hmacSHA512: .sha512HMAC
        }
    }
}
