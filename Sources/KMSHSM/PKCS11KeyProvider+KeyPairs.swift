import Crypto
public import KMS
import PKCS11

/// Asymmetric keys. A KMS key's private key is generated in the token, leaves it only wrapped under the
/// domain key (RFC 5649 over the token's PKCS#8), and is used as a non-extractable session object. The public
/// key is stored in the clear as a SubjectPublicKeyInfo and used as a session object made from it; the unwrap of
/// an EC private key takes its point from there too where the token needs it (the profile's `privateKeyUnwrap`).
extension PKCS11KeyProvider {
    // MARK: Key generation

    func createKeyPair(for keyID: KeyID, version: UInt32, spec: KeyPairSpec) async throws -> BackingKeyMaterial {
        try requireKeyPairSupport(spec, "holds no \(spec.rawValue) KMS keys")
        let wrapMechanism = try wrapMechanism(for: .keyPair(spec))
        return try await onHSM("create a key pair", answers: { Self.unsupportedSpec($0, spec) }) { [self] login in
            try login.token.withSession { session throws(PKCS11Error) -> BackingKeyMaterial in
                // Extractable only so the token can wrap it; this copy is destroyed at once.
                let pair = try generatePair(spec, privateTemplate: privateKeyTemplate(spec, extractable: true), in: session)
                defer {
                    try? session.destroyObject(pair.privateKey)
                    try? session.destroyObject(pair.publicKey)
                }
                let publicKey = AsymmetricEncoding.subjectPublicKeyInfo(try readPublicKey(pair.publicKey, spec, in: session))
                let wrapped = try session.wrapKey(pair.privateKey, with: login.domainKey, mechanism: .keyWrap(wrapMechanism))
                let (iv, proof) = try session.sealGCM(
                    Self.bindingPlaintext, key: login.sealingKey,
                    additionalData: Self.keyPairBindingData(keyID, version, wrappedKey: wrapped, publicKey: publicKey))
                return BackingKeyMaterial(
                    wrappedKey: wrapped, binding: iv + proof, wrappingKeyLabel: configuration.domainKeyLabel, publicKey: publicKey)
            }
        }
    }

    /// A key pair's binding is made by the token's sealing key over the key id, version, EKT and public key
    /// together, so none of the three can be swapped for another key's.
    static func keyPairBindingData(_ keyID: KeyID, _ version: UInt32, wrappedKey: [UInt8], publicKey: [UInt8]) -> [UInt8] {
        bindingData(keyID, version) + Array("trent.key-pair.v1".utf8) + AsymmetricEncoding.hash(wrappedKey + publicKey, .sha256)
    }

    /// Like ``verifySealedBinding(_:_:_:wrappedKey:_:)``: only a failed tag is a no, a device fault is thrown.
    func verifyKeyPairBinding(_ key: BackingKeyRecord, _ login: HSMToken.Login) throws(PKCS11Error) -> Bool {
        guard let publicKey = key.publicKey, key.binding.count > Mechanism.gcmIVLength else { return false }
        let data = Self.keyPairBindingData(key.keyID, key.version, wrappedKey: key.wrappedKey, publicKey: publicKey)
        let opened = try decryptOrNil(
            Array(key.binding.dropFirst(Mechanism.gcmIVLength)), key: login.sealingKey, iv: Array(key.binding.prefix(Mechanism.gcmIVLength)),
            additionalData: data, login)
        return opened == Self.bindingPlaintext
    }

    func generatePair(
        _ spec: KeyPairSpec, privateTemplate: [Attribute], in session: borrowing Session
    ) throws(PKCS11Error) -> (publicKey: ObjectHandle, privateKey: ObjectHandle) {
        var publicTemplate: [Attribute] = [.objectClass(.publicKey), Attribute(.token, false), Attribute(.verify, true)]
        if let bits = spec.rsaModulusBits {
            publicTemplate += [
                .keyType(.rsa), Attribute(.encrypt, true), Attribute(.modulusBits, ulong: UInt(bits)),
                Attribute(.publicExponent, bytes: [0x01, 0x00, 0x01]),
            ]
        } else if let curve = AsymmetricEncoding.curve(of: spec) {
            publicTemplate += [.keyType(.ec), Attribute(.ecParams, bytes: curve.parameters)]
        }
        return try session.generateKeyPair(BackingKeyKind.keyPair(spec).generationMechanism, publicTemplate: publicTemplate, privateTemplate: privateTemplate)
    }

    public func unavailability(of spec: KeySpec) -> String? {
        guard spec == .eccNistEdwards25519 else { return nil }
        let reason = configuration.profile.eddsaUnavailable ?? "its profile records no EdDSA"
        return "This HSM (profile '\(configuration.profile.name)') holds no \(spec.rawValue) keys: \(reason)."
    }

    /// Refuses a key pair the token cannot keep wrapped (the profile's `keyPairFamilies`) or whose curve it lacks,
    /// before the token is asked; `consequence` ends the message ("holds no ECC_NIST_P256 KMS keys").
    func requireKeyPairSupport(_ spec: KeyPairSpec, _ consequence: String) throws {
        let family: HSMProfile.KeyPairFamily = spec.isRSA ? .rsa : .ec
        guard configuration.profile.keyPairFamilies.contains(family) else {
            throw KMSError(
                .unsupportedOperation,
                "This HSM (profile '\(configuration.profile.name)') cannot keep \(family.rawValue) private keys wrapped and unwrap them again, so it \(consequence).")
        }
        try requireCurve(of: spec, consequence)
    }

    /// Refuses a curve the profile's `ecCurves` leaves out before the token is asked.
    func requireCurve(of spec: KeyPairSpec, _ consequence: String) throws {
        guard configuration.profile.generatesCurve(of: spec) else {
            let curve = AsymmetricEncoding.curve(of: spec)?.name ?? spec.rawValue
            throw KMSError(.unsupportedOperation, "This HSM (profile '\(configuration.profile.name)') has no \(curve) curve, so it \(consequence).")
        }
    }

    /// A curve or key size the token does not have is the caller's answer, not a device fault.
    static func unsupportedSpec(_ error: PKCS11Error, _ spec: KeyPairSpec) -> KMSError? {
        guard error.function == .generateKeyPair,
            [.domainParamsInvalid, .curveNotSupported, .keySizeRange, .mechanismInvalid].contains(error.returnValue)
        else { return nil }
        return KMSError(.unsupportedOperation, "This HSM cannot generate \(spec.rawValue) key pairs (\(error.returnValue)).")
    }

    /// The private half: usable for signing and (RSA) decryption or (EC) derivation; Trent's service layer
    /// decides which of those a KMS key may do (tokens may turn usage attributes on anyway: the profile's
    /// `privateKeyUnwrap.forcedTrue`).
    func privateKeyTemplate(_ spec: KeyPairSpec, extractable: Bool, sensitive: Bool = true) -> [Attribute] {
        Self.privateKeyTemplate(spec, profile: configuration.profile, extractable: extractable, sensitive: sensitive)
    }

    /// The template of a private key on a token with `profile` (also what `trent token probe` unwraps with).
    static func privateKeyTemplate(_ spec: KeyPairSpec, profile: HSMProfile, extractable: Bool, sensitive: Bool = true) -> [Attribute] {
        let common: [Attribute] = [
            .objectClass(.privateKey), Attribute(.token, false), Attribute(.private, true), Attribute(.sensitive, sensitive),
            Attribute(.extractable, extractable), Attribute(.sign, true), Attribute(.unwrap, false),
        ]
        let restrict = profile.allowedMechanisms.enforced
        if spec.isRSA {
            return common + [.keyType(.rsa), Attribute(.decrypt, true)]
                + (restrict ? [.allowedMechanisms([.rsaPKCS, .rsaPKCSPSS, .rsaPKCSOAEP] + (profile.needsRawRSA ? [.rsaX509] : []))] : [])
        }
        return common + [.keyType(.ec), Attribute(.derive, true)] + (restrict ? [.allowedMechanisms([.ecdsa, .ecdh1Derive])] : [])
    }

    /// The `C_UnwrapKey` template of a backing key's working copy: sensitive and non-extractable, and for an EC
    /// private key on a token whose profile names one, the extra attribute (NSS softoken: `CKA_NSS_DB`) with the
    /// point of the key's stored SubjectPublicKeyInfo. The binding, checked next, covers that public key.
    func unwrapTemplate(_ kind: BackingKeyKind, for key: BackingKeyRecord) throws -> [Attribute] {
        let template = backingKeyTemplate(kind, extractable: false)
        guard case .keyPair(let spec) = kind, !spec.isRSA, configuration.profile.privateKeyUnwrap?.ecTemplateAttribute != nil else {
            return template
        }
        guard let spki = key.publicKey, case .ec(_, let point)? = try? AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: spki) else {
            throw KMSError(.internalFailure, "The stored public key of \(key.keyID) version \(key.version) is missing or unreadable.")
        }
        return template + [try configuration.profile.ecUnwrapAttribute(publicPoint: point)].compactMap { $0 }
    }

    func readPublicKey(_ handle: ObjectHandle, _ spec: KeyPairSpec, in session: borrowing Session) throws(PKCS11Error) -> AsymmetricEncoding.PublicKey {
        if spec.isRSA {
            return .rsa(modulus: try session.attribute(.modulus, of: handle).value, exponent: try session.attribute(.publicExponent, of: handle).value)
        }
        let curve = AsymmetricEncoding.curve(of: spec)!
        let value = try session.attribute(.ecPoint, of: handle).value
        guard let point = try? AsymmetricEncoding.point(fromECPointAttribute: value, curve: curve) else {
            throw PKCS11Error(.functionFailed, in: .getAttributeValue, detail: "the token's CKA_EC_POINT is not an uncompressed \(curve.name) point")
        }
        return .ec(curve: curve.parameters, point: point)
    }

    // MARK: Signatures

    public func sign(_ message: [UInt8], type: MessageType, under key: BackingKeyRecord, spec: KeyPairSpec, algorithm: SigningAlgorithm) async throws -> [UInt8] {
        let digest = type == .raw ? AsymmetricEncoding.hash(message, algorithm.digest) : message
        return try await withWorkingKey(key, kind: .keyPair(spec), "sign") { session, handle, _ in
            switch algorithm.scheme {
            case .pss:
                return try session.sign(digest, key: handle, mechanism: .rsaPSS(algorithm.digest.hashFunction))
            case .pkcs1v15:
                return try session.sign(AsymmetricEncoding.digestInfo(digest, algorithm.digest), key: handle, mechanism: .rsaPKCS)
            case .ecdsa, .unsupported:
                return AsymmetricEncoding.derSignature(fromRaw: try session.sign(digest, key: handle, mechanism: .ecdsa))
            }
        }
    }

    public func verify(
        _ message: [UInt8], type: MessageType, signature: [UInt8], under key: BackingKeyRecord, spec: KeyPairSpec,
        algorithm: SigningAlgorithm
    ) async throws -> Bool {
        let digest = type == .raw ? AsymmetricEncoding.hash(message, algorithm.digest) : message
        let data: [UInt8]
        let tokenSignature: [UInt8]
        let mechanism: Mechanism
        switch algorithm.scheme {
        case .pss:
            (data, tokenSignature, mechanism) = (digest, signature, .rsaPSS(algorithm.digest.hashFunction))
        case .pkcs1v15:
            (data, tokenSignature, mechanism) = (AsymmetricEncoding.digestInfo(digest, algorithm.digest), signature, .rsaPKCS)
        case .ecdsa, .unsupported:
            guard let curve = AsymmetricEncoding.curve(of: spec),
                let raw = try? AsymmetricEncoding.rawSignature(fromDER: signature, fieldLength: curve.fieldLength)
            else { return false }
            (data, tokenSignature, mechanism) = (digest, raw, .ecdsa)
        }
        if let bits = spec.rsaModulusBits, signature.count != bits / 8 { return false }
        let failures = signatureFailureReturnValues
        return try await withPublicKey(key, spec, "verify a signature") { session, handle throws(PKCS11Error) in
            do throws(PKCS11Error) {
                try session.verify(data, signature: tokenSignature, key: handle, mechanism: mechanism)
                return true
            } catch where error.function == .verify && failures.contains(error.returnValue) {
                return false
            }
        }
    }

    // MARK: RSA encryption

    /// RSAES-OAEP with the token's own OAEP where it supports the hash; otherwise (SoftHSM has SHA-1 only)
    /// OAEP padding on the host around a raw RSA operation in the token.
    public func encrypt(_ plaintext: [UInt8], under key: BackingKeyRecord, spec: KeyPairSpec, algorithm: RSAEncryptionAlgorithm) async throws -> [UInt8] {
        let modulusLength = (spec.rsaModulusBits ?? 0) / 8
        let inToken = configuration.profile.tokenDoesOAEP(with: algorithm.digest)
        return try await withPublicKey(key, spec, "encrypt") { session, handle throws(PKCS11Error) in
            if inToken {
                return try session.encrypt(plaintext, key: handle, mechanism: .rsaOAEP(algorithm.digest.hashFunction))
            }
            let seed = try session.generateRandom(count: algorithm.digest.length)
            let encoded = AsymmetricEncoding.oaepEncode(plaintext, modulusLength: modulusLength, seed: seed, algorithm.digest)
            return try session.encrypt(encoded, key: handle, mechanism: .rsaRaw)
        }
    }

    public func decrypt(_ ciphertext: [UInt8], under key: BackingKeyRecord, spec: KeyPairSpec, algorithm: RSAEncryptionAlgorithm) async throws -> [UInt8] {
        let modulusLength = (spec.rsaModulusBits ?? 0) / 8
        let invalid = KMSError(.invalidCiphertext, "")
        guard ciphertext.count == modulusLength else { throw invalid }
        let inToken = configuration.profile.tokenDoesOAEP(with: algorithm.digest)
        let plaintext = try await withWorkingKey(key, kind: .keyPair(spec), "decrypt") { session, handle, _ throws -> [UInt8]? in
            do throws(PKCS11Error) {
                if inToken {
                    return try session.decrypt(ciphertext, key: handle, mechanism: .rsaOAEP(algorithm.digest.hashFunction))
                }
                // A ciphertext not below the modulus is refused here (SoftHSM: CKR_GENERAL_ERROR).
                let block = try session.decrypt(ciphertext, key: handle, mechanism: .rsaRaw)
                return AsymmetricEncoding.oaepDecode(block, modulusLength: modulusLength, algorithm.digest)
            } catch where Self.isRejectedCiphertext(error) {
                return nil
            }
        }
        guard let plaintext else { throw invalid }
        return plaintext
    }

    /// `CKM_RSA_X_509` for RSA private keys, only on a token whose OAEP lacks a hash of the API (the profile's
    /// `rsaOAEPDigests`): elsewhere the token refuses raw RSA with them.
    var rawRSAWhereNeeded: [MechanismType] { configuration.profile.needsRawRSA ? [.rsaX509] : [] }

    /// What tokens answer for a ciphertext whose padding does not check out, or that is not below the modulus
    /// (SoftHSM: `CKR_GENERAL_ERROR`, NSS: `CKR_ARGUMENTS_BAD`).
    static func isRejectedCiphertext(_ error: PKCS11Error) -> Bool {
        error.function == .decrypt
            && [.encryptedDataInvalid, .encryptedDataLenRange, .dataInvalid, .dataLenRange, .generalError, .argumentsBad].contains(error.returnValue)
    }

    // MARK: Key agreement

    public func deriveSharedSecret(peerPublicKey: [UInt8], under key: BackingKeyRecord, spec: KeyPairSpec) async throws -> [UInt8] {
        guard let curve = AsymmetricEncoding.curve(of: spec) else {
            throw KMSError(.invalidKeyUsage, "Only elliptic-curve keys derive shared secrets.")
        }
        guard case .ec(let peerCurve, let point)? = try? AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: peerPublicKey),
            peerCurve == curve.parameters, Self.isOnCurve(point, spec)
        else {
            // AWS says nothing more about a public key it cannot use.
            throw KMSError(.validation, "")
        }
        return try await withWorkingKey(key, kind: .keyPair(spec), "derive a shared secret") { session, handle, _ in
            let secret = try session.deriveKey(
                handle, mechanism: .ecdh(peerPoint: point),
                template: [
                    .objectClass(.secretKey), .keyType(.genericSecret), Attribute(.token, false), Attribute(.sensitive, false),
                    Attribute(.extractable, true),
                ])
            defer { try? session.destroyObject(secret) }
            return try session.attribute(.value, of: secret).value
        }
    }

    /// Checked on the host before the token sees it: tokens differ in how (and whether) they refuse a point
    /// that is not on the curve. Key agreement keys are on NIST curves only.
    static func isOnCurve(_ point: [UInt8], _ spec: KeyPairSpec) -> Bool {
        switch spec {
        case .eccNistP256: (try? P256.KeyAgreement.PublicKey(x963Representation: point)) != nil
        case .eccNistP384: (try? P384.KeyAgreement.PublicKey(x963Representation: point)) != nil
        case .eccNistP521: (try? P521.KeyAgreement.PublicKey(x963Representation: point)) != nil
        default: false
        }
    }

    // MARK: Data key pairs

    public func generateDataKeyPair(_ spec: KeyPairSpec) async throws -> (privateKey: [UInt8], publicKey: [UInt8]) {
        try requireCurve(of: spec, "cannot generate \(spec.rawValue) key pairs")
        return try await onHSM("generate a data key pair", answers: { Self.unsupportedSpec($0, spec) }) { [self] login in
            try login.token.withSession { session throws(PKCS11Error) in
                // Readable on purpose: this pair is for the caller, and nothing of it stays in the token.
                let pair = try generatePair(spec, privateTemplate: privateKeyTemplate(spec, extractable: true, sensitive: false), in: session)
                defer {
                    try? session.destroyObject(pair.privateKey)
                    try? session.destroyObject(pair.publicKey)
                }
                let publicKey = try readPublicKey(pair.publicKey, spec, in: session)
                let privateKey: AsymmetricEncoding.PrivateKey
                switch publicKey {
                case .rsa(let modulus, let exponent):
                    var parts: [[UInt8]] = []
                    for type in [AttributeType.privateExponent, .prime1, .prime2, .exponent1, .exponent2, .coefficient] {
                        parts.append(try session.attribute(type, of: pair.privateKey).value)
                    }
                    privateKey = .rsa(
                        modulus: modulus, publicExponent: exponent, privateExponent: parts[0], prime1: parts[1], prime2: parts[2],
                        exponent1: parts[3], exponent2: parts[4], coefficient: parts[5])
                case .ec(_, let point):
                    privateKey = .ec(
                        curve: AsymmetricEncoding.curve(of: spec)!, privateValue: try session.attribute(.value, of: pair.privateKey).value,
                        point: point)
                }
                return (AsymmetricEncoding.pkcs8(privateKey), AsymmetricEncoding.subjectPublicKeyInfo(publicKey))
            }
        }
    }

    // MARK: Public keys in the token

    /// Runs `body` with a session object of the key's public half, made from the stored SubjectPublicKeyInfo
    /// on first use and cached.
    func withPublicKey<R: Sendable>(
        _ key: BackingKeyRecord, _ spec: KeyPairSpec, _ what: String,
        _ body: @escaping @Sendable (borrowing Session, ObjectHandle) throws(PKCS11Error) -> R
    ) async throws -> R {
        guard let spki = key.publicKey, let publicKey = try? AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: spki) else {
            throw KMSError(.internalFailure, "The stored public key of \(key.keyID) version \(key.version) is missing or unreadable.")
        }
        return try await onHSM(what) { [self] login in
            let id = HandleCache.VersionID(keyID: key.keyID, version: key.version)
            for attempt in 0..<2 {
                let handle = try login.publicKeys.handle(for: id) ?? createPublicKey(publicKey, id, login)
                do {
                    return try login.token.withSession { session throws(PKCS11Error) in try body(session, handle) }
                } catch let error as PKCS11Error where attempt == 0 && (error.returnValue == .objectHandleInvalid || error.returnValue == .keyHandleInvalid) {
                    _ = login.publicKeys.remove(id, ifHandle: handle)
                }
            }
            throw KMSError(.internalFailure, "The public key object kept disappearing; retry the request.")
        }
    }

    private func createPublicKey(_ publicKey: AsymmetricEncoding.PublicKey, _ id: HandleCache.VersionID, _ login: HSMToken.Login) throws -> ObjectHandle {
        var template: [Attribute] = [.objectClass(.publicKey), Attribute(.token, false), Attribute(.verify, true)]
        switch publicKey {
        case .rsa(let modulus, let exponent):
            template += [.keyType(.rsa), Attribute(.encrypt, true), Attribute(.modulus, bytes: modulus), Attribute(.publicExponent, bytes: exponent)]
        case .ec(let curve, let point):
            template += [.keyType(.ec), Attribute(.ecParams, bytes: curve), Attribute(.ecPoint, bytes: DER.encode(.octetString, point))]
        }
        let handle = try login.token.withLongLivedSession { session throws(PKCS11Error) in try session.createObject(template) }
        let (use, stale) = login.publicKeys.insert(handle, for: id)
        destroy(stale, login)
        return use
    }
}

extension DigestAlgorithm {
    var hashFunction: PKCS11.HashFunction {
        switch self {
        case .sha1: .sha1
        case .sha256: .sha256
        case .sha384: .sha384
        case .sha512: .sha512
        }
    }
}
