public import KMS
public import Logging
import PKCS11

/// The PKCS#11 key provider: backing keys are generated in the token, leave it only wrapped under the
/// domain key, and are used as non-extractable session objects unwrapped on demand and cached.
///
/// Every Cryptoki task runs through an ``HSMToken`` (its thread pool, deadline, fault handling and recovery):
/// Trent's own token for keys it keeps, a custom key store's token for keys that live there. Working keys and
/// the domain and sealing key handles belong to the token's current login, so a recovery drops them all and
/// they are found or unwrapped again on first use.
public final class PKCS11KeyProvider: KeyProvider {
    public struct Configuration: Sendable {
        public var keyLabels: TokenKeyLabels
        /// The token's quirks: wrap mechanism, which codes mean a failed tag, whether to copy token keys.
        public var profile: HSMProfile

        public init(keyLabels: TokenKeyLabels, profile: HSMProfile) {
            self.keyLabels = keyLabels
            self.profile = profile
        }

        var domainKeyLabel: String { keyLabels.domainKey }
    }

    public let token: HSMToken
    /// The tokens of custom key stores, for keys whose material is one of their objects.
    let customKeyStores: PKCS11CustomKeyStoreTokens?
    let configuration: Configuration
    let rfc3394: MechanismType
    /// What `C_Verify` answers for a wrong signature on this token (the profile's `macFailureCodes`).
    let signatureFailureReturnValues: Set<PKCS11Error.ReturnValue>
    let logger: Logger

    public init(token: HSMToken, configuration: Configuration, customKeyStores: PKCS11CustomKeyStoreTokens? = nil, logger: Logger) throws {
        self.rfc3394 = try configuration.profile.rfc3394Mechanism()
        _ = try configuration.profile.authenticationFailures()  // a profile naming an unknown code fails here, not per request
        self.signatureFailureReturnValues = try configuration.profile.macFailures()
        self.token = token
        self.customKeyStores = customKeyStores
        self.configuration = configuration
        self.logger = logger
    }

    /// What every login to Trent's own token does before serving: finds the domain and sealing keys, and on
    /// tokens that re-read their storage on every use of a token key (NSS softoken) makes a session copy of the
    /// sealing key, which stays sensitive and non-extractable.
    /// - Throws: ``HSMSetupError`` when the token lacks them (run `trent token init`).
    public static func preparation(labels: TokenKeyLabels, profile: HSMProfile) -> HSMToken.Preparation {
        { login in
            let token = login.token
            func find(_ label: String, _ role: String) throws -> ObjectHandle {
                guard let key = try TokenKeys.find(in: token, label: label) else {
                    throw HSMSetupError("token '\(token.label)' has no \(role) labelled '\(label)': run `trent token init`")
                }
                return key
            }
            login.setObject(try find(labels.domainKey, "domain key"), for: .domainKey)
            var sealing = try find(labels.sealingKey, "sealing key")
            if profile.copyTokenKeysToSession,
                let copy = try? token.withLongLivedSession({ [sealing] session throws(PKCS11Error) in
                    try session.copyObject(sealing, template: [Attribute(.token, false)])
                })
            {
                sealing = copy
            }
            login.setObject(sealing, for: .sealingKey)
        }
    }

    // MARK: KeyProvider

    public func createBackingKey(for keyID: KeyID, version: UInt32, kind: BackingKeyKind) async throws -> BackingKeyMaterial {
        if case .keyPair(let spec) = kind { return try await createKeyPair(for: keyID, version: version, spec: spec) }
        let wrapMechanism = try wrapMechanism(for: kind)
        return try await onHSM("create a backing key") { [self] login in
            try login.token.withSession { session throws(PKCS11Error) -> BackingKeyMaterial in
                // Generated extractable only so the token can wrap it; this copy is destroyed at once and the
                // working copies are unwrapped non-extractable.
                let fresh = try session.generateKey(
                    kind.generationMechanism, template: backingKeyTemplate(kind, extractable: true) + [Attribute(.valueLength, ulong: UInt(kind.keyLength))])
                defer { try? session.destroyObject(fresh) }
                let wrapped = try session.wrapKey(fresh, with: login.domainKey, mechanism: .keyWrap(wrapMechanism))
                let binding = try sealedBinding(keyID, version, wrappedKey: wrapped, in: session, login)
                return BackingKeyMaterial(wrappedKey: wrapped, binding: binding, wrappingKeyLabel: configuration.domainKeyLabel)
            }
        }
    }

    public func generateMac(_ message: [UInt8], under key: BackingKeyRecord, algorithm: MacAlgorithm) async throws -> [UInt8] {
        try await withWorkingKey(key, kind: .hmac(algorithm), "compute a MAC") { session, handle, _ in
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
        try await withWorkingKey(key, kind: .aes256, "encrypt") { session, handle, _ in
            let (iv, sealed) = try session.sealGCM(plaintext, key: handle, additionalData: additionalData)
            return SealedData(iv: iv, ciphertextAndTag: sealed)
        }
    }

    /// A failed tag is InvalidCiphertextException only once a fresh session confirms it (``decryptOrNil``).
    public func decrypt(_ sealed: SealedData, under key: BackingKeyRecord, additionalData: [UInt8]) async throws -> [UInt8] {
        // Not on the lent session: a failure that only looks like a failed tag (a device fault with the same code) can
        // leave its operation active, and a session that fails is closed, never lent again; decryptOrNil's own are.
        try await withWorkingKey(key, kind: .aes256, "decrypt") { [self] _, handle, login in
            guard let plaintext = try decryptOrNil(sealed.ciphertextAndTag, key: handle, iv: sealed.iv, additionalData: additionalData, login) else {
                throw KMSError(.invalidCiphertext, "")
            }
            return plaintext
        }
    }

    public func generateRandom(count: Int) async throws -> [UInt8] {
        try await onHSM("generate random bytes") { login in
            try login.token.withSession { session throws(PKCS11Error) in try session.generateRandom(count: count) }
        }
    }

    public func seal(_ plaintext: [UInt8], additionalData: [UInt8]) async throws -> SealedData {
        try await onHSM("seal a secret") { login in
            try login.token.withSession { session throws(PKCS11Error) in
                let (iv, sealed) = try session.sealGCM(plaintext, key: login.sealingKey, additionalData: additionalData)
                return SealedData(iv: iv, ciphertextAndTag: sealed)
            }
        }
    }

    public func unseal(_ sealed: SealedData, additionalData: [UInt8]) async throws -> [UInt8] {
        try await onHSM("unseal a secret") { [self] login in
            guard let plaintext = try decryptOrNil(sealed.ciphertextAndTag, key: login.sealingKey, iv: sealed.iv, additionalData: additionalData, login) else {
                throw KMSError(.invalidCiphertext, "The sealed value is invalid or belongs to something else.")
            }
            return plaintext
        }
    }

    public func forget(_ keyID: KeyID) async {
        _ = try? await onHSM("destroy working keys") { [self] login in
            destroy(login.workingKeys.removeAll(of: keyID) + login.publicKeys.removeAll(of: keyID), login)
        }
    }

    /// Number of unwrapped backing keys held in the token (for tests and metrics).
    public var cachedKeyCount: Int { token.login?.workingKeys.count ?? 0 }

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
    func sealedBinding(
        _ keyID: KeyID, _ version: UInt32, wrappedKey: [UInt8], in session: borrowing Session, _ login: HSMToken.Login
    ) throws(PKCS11Error) -> [UInt8] {
        let (iv, proof) = try session.sealGCM(
            Self.bindingPlaintext, key: login.sealingKey, additionalData: Self.sealedBindingData(keyID, version, wrappedKey: wrappedKey))
        return [Self.sealedBindingTag] + iv + proof
    }

    /// Marks the sealing-key binding of secret keys: 1 + 12 + 41 bytes, a length no earlier binding had (an AES
    /// self-proof is 53 bytes, an HMAC one the MAC's length).
    static let sealedBindingTag: UInt8 = 0x02
    static let sealedBindingLength = 1 + Mechanism.gcmIVLength + bindingPlaintext.count + 16

    static func sealedBindingData(_ keyID: KeyID, _ version: UInt32, wrappedKey: [UInt8]) -> [UInt8] {
        bindingData(keyID, version) + Array("trent.secret-key.v2".utf8) + AsymmetricEncoding.hash(wrappedKey, .sha256)
    }

    /// Whether `binding` is the sealing key's proof for this key id, version and EKT. Only a failed tag is a no;
    /// a device fault is thrown, so that it is answered as one (and retried), never as a foreign key.
    func verifySealedBinding(
        _ binding: [UInt8], _ keyID: KeyID, _ version: UInt32, wrappedKey: [UInt8], _ login: HSMToken.Login
    ) throws(PKCS11Error) -> Bool {
        guard Self.hasSealedBinding(binding) else { return false }
        let iv = Array(binding[1...Mechanism.gcmIVLength])
        let proof = Array(binding.dropFirst(1 + Mechanism.gcmIVLength))
        let data = Self.sealedBindingData(keyID, version, wrappedKey: wrappedKey)
        let opened = try decryptOrNil(proof, key: login.sealingKey, iv: iv, additionalData: data, login)
        return opened == Self.bindingPlaintext
    }

    /// AES-GCM decryption that answers nil for a failed tag, as the login's token reports one (a custom key store's
    /// token may differ from Trent's own). A tag failure is checked once more on a fresh session before it counts:
    /// some tokens (SoftHSM) report a failed tag and a device fault with the same code.
    func decryptOrNil(
        _ sealed: [UInt8], key: ObjectHandle, iv: [UInt8], additionalData: [UInt8], _ login: HSMToken.Login, attempts: Int = 2
    ) throws(PKCS11Error) -> [UInt8]? {
        for _ in 0..<attempts {
            do {
                return try login.token.withSession { session throws(PKCS11Error) in
                    try session.decrypt(sealed, key: key, mechanism: .aesGCM(iv: iv, additionalData: additionalData))
                }
            } catch let error where isTagFailure(error, login) {
                continue
            }
        }
        return nil
    }

    private func isTagFailure(_ error: PKCS11Error, _ login: HSMToken.Login) -> Bool {
        error.function == .decrypt && login.tagFailures.contains(error.returnValue)
    }

    static func hasSealedBinding(_ binding: [UInt8]) -> Bool {
        binding.count == sealedBindingLength && binding.first == sealedBindingTag
    }

    /// The proof earlier versions made with the backing key itself: an AES key sealed a fixed plaintext with the key
    /// id and version as AAD; an HMAC key MACed them. Checked only to carry such keys over to the sealed binding
    /// (``rebind(_:kind:)``) and to compare re-imported material with material deleted before the change.
    func verifyLegacyBinding(_ handle: ObjectHandle, kind: BackingKeyKind, _ key: BackingKeyRecord, _ login: HSMToken.Login) -> Bool {
        let data = Self.bindingData(key.keyID, key.version)
        switch kind {
        case .aes256:
            guard key.binding.count > Mechanism.gcmIVLength else { return false }
            let iv = Array(key.binding.prefix(Mechanism.gcmIVLength))
            let proof = Array(key.binding.dropFirst(Mechanism.gcmIVLength))
            let opened = try? login.token.withSession { session throws(PKCS11Error) in
                try session.decrypt(proof, key: handle, mechanism: .aesGCM(iv: iv, additionalData: data))
            }
            return opened == Self.bindingPlaintext
        case .hmac(let algorithm):
            let verified: Void? = try? login.token.withSession { session throws(PKCS11Error) in
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
        return try await onHSM("carry a backing key over to the sealed binding") { [self] login in
            let handle = try login.token.withSession { session throws(PKCS11Error) in
                try session.unwrapKey(key.wrappedKey, with: login.domainKey, mechanism: .keyWrap(mechanism), template: backingKeyTemplate(kind, extractable: false))
            }
            defer { destroy([handle], login) }
            guard verifyLegacyBinding(handle, kind: kind, key, login) else { return nil }
            return try login.token.withSession { session throws(PKCS11Error) in
                try sealedBinding(key.keyID, key.version, wrappedKey: key.wrappedKey, in: session, login)
            }
        }
    }

    /// Runs `body` with the handle of `key`'s material, wherever it lives: a working copy in Trent's own token,
    /// unwrapped from its EKT on a cache miss, or the object of a custom key store in that store's token, found
    /// by its selector. A handle that went stale (evicted by another thread, or destroyed by the token) is found
    /// again once.
    func withWorkingKey<R: Sendable>(
        _ key: BackingKeyRecord, kind: BackingKeyKind, _ what: String,
        _ body: @escaping @Sendable (borrowing Session, ObjectHandle, HSMToken.Login) throws -> R
    ) async throws -> R {
        let (token, resolve) = try keyLocation(key, kind: kind)
        return try await token.perform(what) { login in
            for attempt in 0..<2 {
                let (handle, evict) = try resolve(login)
                do {
                    // Cryptoki failures leave the closure as they are (the session is closed); an answer such as a
                    // failed tag leaves it as a result (the session goes back to the pool).
                    let result = try login.token.withSession { session throws(PKCS11Error) -> Result<R, any Error> in
                        do {
                            return .success(try body(session, handle, login))
                        } catch let error as PKCS11Error {
                            throw error
                        } catch {
                            return .failure(error)
                        }
                    }
                    return try result.get()
                } catch let error as PKCS11Error where attempt == 0 && (error.returnValue == .objectHandleInvalid || error.returnValue == .keyHandleInvalid) {
                    evict()
                }
            }
            throw KMSError(.internalFailure, "The key material kept disappearing from the HSM; the request can be retried.")
        }
    }

    /// Which token holds `key`'s material, and how a login finds its handle (and forgets a stale one).
    private func keyLocation(
        _ key: BackingKeyRecord, kind: BackingKeyKind
    ) throws -> (HSMToken, @Sendable (HSMToken.Login) throws -> (ObjectHandle, @Sendable () -> Void)) {
        if let reference = key.tokenObject {
            guard let customKeyStores, let token = customKeyStores.token(of: reference.storeID) else {
                throw KMSError(.invalidState, "The custom key store \(reference.storeID) is not connected.")
            }
            let name = HSMToken.Login.ObjectName.tokenObject(reference.object)
            return (token, { login in
                let handle = try login.object(name) ?? PKCS11CustomKeyStoreTokens.findUnique(reference.object, in: login)
                return (handle, { login.dropObject(name, ifHandle: handle) })
            })
        }
        let id = HandleCache.VersionID(keyID: key.keyID, version: key.version)
        return (token, { [self] login in
            let handle = try login.workingKeys.handle(for: id) ?? load(key, kind: kind, id, login)
            return (handle, { _ = login.workingKeys.remove(id, ifHandle: handle) })
        })
    }

    /// Unwraps an EKT into a non-extractable session object and proves it is the key made for this key id and
    /// version before anyone uses it: an EKT copied onto another key's row fails here.
    private func load(_ key: BackingKeyRecord, kind: BackingKeyKind, _ id: HandleCache.VersionID, _ login: HSMToken.Login) throws -> ObjectHandle {
        guard key.wrappingKeyLabel == configuration.domainKeyLabel else {
            throw KMSError(.internalFailure, "Backing key \(key.version) of \(key.keyID) is wrapped under domain key '\(key.wrappingKeyLabel)', which this node does not use.")
        }
        // The binding is the sealing key's proof over the stored bytes: checked before they reach the token at all.
        guard try verifyBinding(kind: kind, key, login) else {
            logger.error("refused a wrapped backing key that is not bound to its key", metadata: [
                "kms.key.id": "\(key.keyID)", "kms.backing_key.version": "\(key.version)",
            ])
            throw KMSError(.internalFailure, "The stored backing key of \(key.keyID) version \(key.version) does not belong to it; refusing to use it.")
        }
        let mechanism = try wrapMechanism(for: kind)
        let template = try unwrapTemplate(kind, for: key)
        let handle = try login.token.withLongLivedSession { session throws(PKCS11Error) in
            try session.unwrapKey(key.wrappedKey, with: login.domainKey, mechanism: .keyWrap(mechanism), template: template)
        }
        let (use, stale) = login.workingKeys.insert(handle, for: id)
        destroy(stale, login)
        return use
    }

    /// Only the sealing key's proofs are accepted: keys bound the earlier way are carried over when the store is
    /// upgraded (``rebind(_:kind:)``), and until then refused.
    func verifyBinding(kind: BackingKeyKind, _ key: BackingKeyRecord, _ login: HSMToken.Login) throws(PKCS11Error) -> Bool {
        switch kind {
        case .aes256, .hmac:
            return try verifySealedBinding(key.binding, key.keyID, key.version, wrappedKey: key.wrappedKey, login)
        case .keyPair:
            return try verifyKeyPairBinding(key, login)
        }
    }

    func destroy(_ handles: [ObjectHandle], _ login: HSMToken.Login) {
        guard !handles.isEmpty else { return }
        try? login.token.withSession { session throws(PKCS11Error) in
            for handle in handles { try? session.destroyObject(handle) }
        }
    }

    /// Runs blocking Cryptoki work on Trent's own token (``HSMToken/perform(_:answers:_:)``); `answers` turns the
    /// failures that answer the request (a curve the token lacks, material of the wrong size) into the caller's error.
    func onHSM<R: Sendable>(
        _ what: String, answers: @escaping @Sendable (PKCS11Error) -> KMSError? = { _ in nil },
        _ work: @escaping @Sendable (HSMToken.Login) throws -> R
    ) async throws -> R {
        try await token.perform(what, answers: answers, work)
    }
}

extension HSMToken.Login {
    /// The handles every login finds first (``PKCS11KeyProvider/preparation(labels:profile:)``); the invalid handle 0,
    /// which every call refuses, on a login that has none.
    var domainKey: ObjectHandle { object(.domainKey) ?? ObjectHandle(rawValue: 0) }
    var sealingKey: ObjectHandle { object(.sealingKey) ?? ObjectHandle(rawValue: 0) }
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
