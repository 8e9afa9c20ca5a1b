import Crypto
public import KMS
import PKCS11

/// Imported key material: the RSA wrapping key lives in the token (its private key leaves it only wrapped,
/// inside the import token), and material is unwrapped straight into the token wherever the token can.
extension PKCS11KeyProvider {
    public func createImportWrappingKey(_ spec: KeyPairSpec) async throws -> ImportWrappingKey {
        guard spec.isRSA else { throw KMSError(.validation, "WrappingKeySpec must be RSA_2048, RSA_3072 or RSA_4096.") }
        let domainWrap = try wrapMechanism(for: .keyPair(spec))
        return try await onHSM("create an import wrapping key", answers: { Self.unsupportedSpec($0, spec) }) { [self] login in
            try login.token.withSession { session throws(PKCS11Error) -> ImportWrappingKey in
                let pair = try generatePair(spec, privateTemplate: wrappingKeyTemplate(extractable: true), in: session)
                defer {
                    try? session.destroyObject(pair.privateKey)
                    try? session.destroyObject(pair.publicKey)
                }
                let publicKey = AsymmetricEncoding.subjectPublicKeyInfo(try readPublicKey(pair.publicKey, spec, in: session))
                let wrapped = try session.wrapKey(pair.privateKey, with: login.domainKey, mechanism: .keyWrap(domainWrap))
                return ImportWrappingKey(spec: spec, wrappedPrivateKey: wrapped, publicKey: publicKey)
            }
        }
    }

    public func importKeyMaterial(
        _ encrypted: [UInt8], wrappingKey: ImportWrappingKey, algorithm: WrappingAlgorithm, for keyID: KeyID, version: UInt32,
        kind: BackingKeyKind, previous: BackingKeyRecord?
    ) async throws -> BackingKeyMaterial {
        guard let digest = algorithm.oaepDigest, let modulusBits = wrappingKey.spec.rsaModulusBits else {
            throw KMSError(.validation, "WrappingAlgorithm \(algorithm.rawValue) is not supported.")
        }
        let modulusLength = modulusBits / 8
        if case .keyPair(let spec) = kind { try requireImportablePrivateKey(spec, algorithm) }
        let wrappingKeyUnwrap = try wrapMechanism(for: .keyPair(wrappingKey.spec))
        let backingKeyWrap = try wrapMechanism(for: kind)
        let rfc5649 = try wrapMechanism(for: .hmac(.hmacSHA256))
        let invalid = KMSError(.invalidCiphertext, "The encrypted key material could not be decrypted with the wrapping key of this import token and \(algorithm.rawValue).")
        let rsaPart = Array(encrypted.prefix(modulusLength))
        let aesPart = Array(encrypted.dropFirst(modulusLength))
        guard encrypted.count >= modulusLength, algorithm.wrapsWithAES != aesPart.isEmpty else { throw invalid }

        let outcome = try await onHSM("import key material", answers: Self.refusedMaterial) { [self] login throws -> Result<BackingKeyMaterial, KMSError> in
            try login.token.withSession { session throws(PKCS11Error) -> Result<BackingKeyMaterial, KMSError> in
                let unwrapping = try session.unwrapKey(
                    wrappingKey.wrappedPrivateKey, with: login.domainKey, mechanism: .keyWrap(wrappingKeyUnwrap),
                    template: wrappingKeyTemplate(extractable: false))
                defer { try? session.destroyObject(unwrapping) }
                // Extractable only so the domain key can wrap it; destroyed before this returns.
                let materialTemplate = backingKeyTemplate(kind, extractable: true)
                let material: ObjectHandle
                if algorithm.wrapsWithAES {
                    let ephemeralTemplate: [Attribute] = [
                        .objectClass(.secretKey), .keyType(.aes), Attribute(.token, false), Attribute(.sensitive, true),
                        Attribute(.extractable, false), Attribute(.unwrap, true), Attribute(.encrypt, false), Attribute(.decrypt, false),
                    ]
                    guard let ephemeral = try unwrapRSA(rsaPart, with: unwrapping, digest, modulusLength, ephemeralTemplate, in: session) else {
                        return .failure(invalid)
                    }
                    defer { try? session.destroyObject(ephemeral) }
                    do throws(PKCS11Error) {
                        material = try session.unwrapKey(aesPart, with: ephemeral, mechanism: .keyWrap(rfc5649), template: materialTemplate)
                    } catch where kind.isKeyPair && Self.isRefusedPrivateKey(error) {
                        return .failure(KMSError(.incorrectKeyMaterial, "The key material is not a PKCS#8 private key of this KMS key's type."))
                    } catch where Self.isRejectedWrappedKey(error) {
                        return .failure(invalid)
                    }
                } else {
                    guard let unwrapped = try unwrapRSA(rsaPart, with: unwrapping, digest, modulusLength, materialTemplate, in: session) else {
                        return .failure(invalid)
                    }
                    material = unwrapped
                }
                defer { try? session.destroyObject(material) }
                if case .keyPair(let spec) = kind {
                    return try importedKeyPair(material, spec, keyID, version, previous: previous, wrap: backingKeyWrap, in: session, login)
                }

                try Self.useOnce(material, kind: kind, in: session)
                let wrapped = try session.wrapKey(material, with: login.domainKey, mechanism: .keyWrap(backingKeyWrap))
                let lengths = kind.importableLengths
                guard lengths.overlaps(try Self.possibleLengths(of: material, wrapped: wrapped, with: backingKeyWrap, rfc3394: rfc3394, in: session)) else {
                    let expected = lengths.count == 1 ? "\(lengths.lowerBound)" : "\(lengths.lowerBound) to \(lengths.upperBound)"
                    return .failure(KMSError(.incorrectKeyMaterial, "The key material has the wrong length; this key takes \(expected) bytes."))
                }
                // The same material under the same domain key wraps to the same EKT (RFC 3394 and 5649 are deterministic),
                // which the first import's sealed binding names; a binding of the earlier kind is checked with the material.
                if let previous {
                    let same = Self.hasSealedBinding(previous.binding)
                        ? try verifySealedBinding(previous.binding, previous.keyID, previous.version, wrappedKey: wrapped, login)
                        : verifyLegacyBinding(material, kind: kind, previous, login)
                    guard same else {
                        return .failure(KMSError(.incorrectKeyMaterial, "The key material is not the material imported into this key before."))
                    }
                }
                let binding = try sealedBinding(keyID, version, wrappedKey: wrapped, in: session, login)
                return .success(BackingKeyMaterial(wrappedKey: wrapped, binding: binding, wrappingKeyLabel: configuration.domainKeyLabel))
            }
        }
        return try outcome.get()
    }

    // MARK: Private keys (RSA and ECC KMS keys)

    /// A private key is imported only as RFC 5649 of its PKCS#8 under the ephemeral AES key (RSA_AES_KEY_WRAP_*), which
    /// the token unwraps into a key object: it is never decoded on the host. An EC key also needs its public key
    /// made in the token (see ``derivedPublicPoint(of:_:_:in:)``), which a token that must be given the point to
    /// unwrap the private key (the profile's `privateKeyUnwrap`, NSS softoken) cannot do.
    func requireImportablePrivateKey(_ spec: KeyPairSpec, _ algorithm: WrappingAlgorithm) throws {
        guard algorithm.wrapsWithAES else {
            throw KMSError(
                .unsupportedOperation,
                "Trent imports \(spec.rawValue) key material only with RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256, so that the token unwraps the private key itself.")
        }
        try requireKeyPairSupport(spec, "imports no \(spec.rawValue) key material")
        guard spec.isRSA || (configuration.profile.privateKeyUnwrap?.ecTemplateAttribute == nil && Self.generator(of: spec) != nil) else {
            throw KMSError(
                .unsupportedOperation,
                "This HSM (profile '\(configuration.profile.name)') cannot make the public key of imported \(spec.rawValue) key material inside the token, so it imports none.")
        }
    }

    /// Checks an unwrapped private key against the KMS key's spec, makes its public key from it in the token, and
    /// wraps it under the domain key with the key pair's binding. Re-imported material must have the earlier public key.
    private func importedKeyPair(
        _ privateKey: ObjectHandle, _ spec: KeyPairSpec, _ keyID: KeyID, _ version: UInt32, previous: BackingKeyRecord?,
        wrap: MechanismType, in session: borrowing Session, _ login: HSMToken.Login
    ) throws(PKCS11Error) -> Result<BackingKeyMaterial, KMSError> {
        let wrong = KMSError(.incorrectKeyMaterial, "The key material is not a \(spec.rawValue) private key.")
        let publicKey: AsymmetricEncoding.PublicKey
        if let bits = spec.rsaModulusBits {
            guard (try? session.attribute(.keyType, of: privateKey).ulongValue) == KeyType.rsa.rawValue,
                case .rsa(let modulus, let exponent) = try readPublicKey(privateKey, spec, in: session)
            else { return .failure(wrong) }
            let significant = Array(modulus.drop { $0 == 0 })
            guard significant.count == bits / 8, let first = significant.first, first & 0x80 != 0 else { return .failure(wrong) }
            publicKey = .rsa(modulus: significant, exponent: exponent)
        } else {
            guard let curve = AsymmetricEncoding.curve(of: spec), (try? session.attribute(.ecParams, of: privateKey).value) == curve.parameters,
                let point = try derivedPublicPoint(of: privateKey, spec, curve, in: session)
            else { return .failure(wrong) }
            publicKey = .ec(curve: curve.parameters, point: point)
        }
        let subjectPublicKeyInfo = AsymmetricEncoding.subjectPublicKeyInfo(publicKey)
        if let previous, previous.publicKey != subjectPublicKeyInfo {
            return .failure(KMSError(.incorrectKeyMaterial, "The key material is not the material imported into this key before."))
        }
        let wrapped = try session.wrapKey(privateKey, with: login.domainKey, mechanism: .keyWrap(wrap))
        let (iv, proof) = try session.sealGCM(
            Self.bindingPlaintext, key: login.sealingKey,
            additionalData: Self.keyPairBindingData(keyID, version, wrappedKey: wrapped, publicKey: subjectPublicKeyInfo))
        return .success(
            BackingKeyMaterial(wrappedKey: wrapped, binding: iv + proof, wrappingKeyLabel: configuration.domainKeyLabel, publicKey: subjectPublicKeyInfo))
    }

    /// An imported EC private key's public point, made in the token: ECDH with the curve's generator gives the point's
    /// x; of the two points with that x, it is the one under which a signature the token makes verifies. Nil when
    /// neither does.
    private func derivedPublicPoint(
        of privateKey: ObjectHandle, _ spec: KeyPairSpec, _ curve: AsymmetricEncoding.Curve, in session: borrowing Session
    ) throws(PKCS11Error) -> [UInt8]? {
        guard let generator = Self.generator(of: spec), let digest = spec.signingAlgorithms.first?.digest else { return nil }
        let secret = try session.deriveKey(
            privateKey, mechanism: .ecdh(peerPoint: generator),
            template: [
                .objectClass(.secretKey), .keyType(.genericSecret), Attribute(.token, false), Attribute(.sensitive, false),
                Attribute(.extractable, true),
            ])
        defer { try? session.destroyObject(secret) }
        let x = try session.attribute(.value, of: secret).value
        guard x.count == curve.fieldLength else { return nil }
        let message = Array("trent.import.public-key".utf8)
        let signature = try session.sign(AsymmetricEncoding.hash(message, digest), key: privateKey, mechanism: .ecdsa)
        for prefix: UInt8 in [0x02, 0x03] {
            if let point = Self.point(compressed: [prefix] + x, spec, verifying: signature, message) { return point }
        }
        return nil
    }

    /// The curve's generator, uncompressed: the public key of the private scalar 1. NIST curves only (swift-crypto
    /// has no secp256k1, so Trent cannot pick its public point).
    static func generator(of spec: KeyPairSpec) -> [UInt8]? {
        switch spec {
        case .eccNistP256: (try? P256.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0, count: 31) + [1])).map { Array($0.publicKey.x963Representation) }
        case .eccNistP384: (try? P384.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0, count: 47) + [1])).map { Array($0.publicKey.x963Representation) }
        case .eccNistP521: (try? P521.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0, count: 65) + [1])).map { Array($0.publicKey.x963Representation) }
        default: nil
        }
    }

    /// The uncompressed point of `compressed` when the raw ECDSA signature of `message` verifies under it.
    private static func point(compressed: [UInt8], _ spec: KeyPairSpec, verifying signature: [UInt8], _ message: [UInt8]) -> [UInt8]? {
        switch spec {
        case .eccNistP256:
            guard let key = try? P256.Signing.PublicKey(compressedRepresentation: compressed),
                let parsed = try? P256.Signing.ECDSASignature(rawRepresentation: signature), key.isValidSignature(parsed, for: message)
            else { return nil }
            return Array(key.x963Representation)
        case .eccNistP384:
            guard let key = try? P384.Signing.PublicKey(compressedRepresentation: compressed),
                let parsed = try? P384.Signing.ECDSASignature(rawRepresentation: signature), key.isValidSignature(parsed, for: message)
            else { return nil }
            return Array(key.x963Representation)
        case .eccNistP521:
            guard let key = try? P521.Signing.PublicKey(compressedRepresentation: compressed),
                let parsed = try? P521.Signing.ECDSASignature(rawRepresentation: signature), key.isValidSignature(parsed, for: message)
            else { return nil }
            return Array(key.x963Representation)
        default:
            return nil
        }
    }

    /// Uses imported material once as its kind, so that the token refuses material of a size it does not take as such
    /// a key (SoftHSM unwraps a 25-byte "AES key" and pads it in RFC 3394, but refuses it for GCM) here, as
    /// ``refusedMaterial(_:)``, rather than at the first Encrypt.
    private static func useOnce(_ material: ObjectHandle, kind: BackingKeyKind, in session: borrowing Session) throws(PKCS11Error) {
        switch kind {
        case .aes256: _ = try session.sealGCM(bindingPlaintext, key: material, additionalData: [])
        case .hmac(let algorithm): _ = try session.sign(bindingPlaintext, key: material, mechanism: .hmac(algorithm.mechanism))
        case .keyPair: break
        }
    }

    /// The material's length: `CKA_VALUE_LEN` where the token sets it on unwrapped keys (SoftHSM leaves it 0),
    /// else what its domain wrap shows: exact for RFC 3394 (input + 8), to within 8 bytes for RFC 5649.
    private static func possibleLengths(
        of material: ObjectHandle, wrapped: [UInt8], with mechanism: MechanismType, rfc3394: MechanismType, in session: borrowing Session
    ) throws(PKCS11Error) -> ClosedRange<Int> {
        if let length = try? session.attribute(.valueLength, of: material).ulongValue, length > 0 { return Int(length)...Int(length) }
        let upper = wrapped.count - 8
        return mechanism == rfc3394 ? upper...upper : max(1, upper - 7)...upper
    }

    /// The import wrapping key's private half: it unwraps (OAEP into the token) and, only on a token whose OAEP lacks
    /// a hash, decrypts (raw RSA); nothing else.
    func wrappingKeyTemplate(extractable: Bool) -> [Attribute] {
        [
            .objectClass(.privateKey), .keyType(.rsa), Attribute(.token, false), Attribute(.private, true), Attribute(.sensitive, true),
            Attribute(.extractable, extractable), Attribute(.unwrap, true), Attribute(.decrypt, configuration.profile.needsRawRSA),
            Attribute(.sign, false),
        ] + (configuration.profile.allowedMechanisms.enforced ? [.allowedMechanisms([.rsaPKCSOAEP] + rawRSAWhereNeeded)] : [])
    }

    /// OAEP-unwraps `ciphertext` into a new object: in the token when it does OAEP with this hash; otherwise
    /// decoded on the host and created from its value (the only case where key material crosses host memory).
    /// Nil when the ciphertext does not decrypt.
    private func unwrapRSA(
        _ ciphertext: [UInt8], with key: ObjectHandle, _ digest: DigestAlgorithm, _ modulusLength: Int, _ template: [Attribute],
        in session: borrowing Session
    ) throws(PKCS11Error) -> ObjectHandle? {
        do throws(PKCS11Error) {
            if configuration.profile.tokenDoesOAEP(with: digest) {
                return try session.unwrapKey(ciphertext, with: key, mechanism: .rsaOAEP(digest.hashFunction), template: template)
            }
            let block: [UInt8]
            do throws(PKCS11Error) {
                block = try session.decrypt(ciphertext, key: key, mechanism: .rsaRaw)
            } catch where Self.isRejectedCiphertext(error) {
                return nil
            }
            guard var value = AsymmetricEncoding.oaepDecode(block, modulusLength: modulusLength, digest) else { return nil }
            defer { for index in value.indices { value[index] = 0 } }
            return try session.createObject(template + [Attribute(.value, bytes: value)])
        } catch where Self.isRejectedWrappedKey(error) {
            return nil
        }
    }

    /// The token refusing the material as a key of its kind: a size it does not take (NSS at unwrap, SoftHSM
    /// when an HMAC key is shorter than its hash or an AES key is not 16, 24 or 32 bytes). Tokens that do not
    /// report `CKA_VALUE_LEN` leave the exact length check to these refusals.
    static func refusedMaterial(_ error: PKCS11Error) -> KMSError? {
        let refusals: Set<PKCS11Error.ReturnValue> = [.keySizeRange, .keyTypeInconsistent, .mechanismInvalid, .attributeValueInvalid]
        let steps: Set<PKCS11Error.Function> = [.unwrapKey, .createObject, .wrapKey, .encryptInit, .signInit]
        guard refusals.contains(error.returnValue), steps.contains(error.function) else { return nil }
        return KMSError(.incorrectKeyMaterial, "The key material is not a key of the right size for this KMS key.")
    }

    /// What tokens answer when the unwrapped bytes are no PKCS#8 private key of the template's type (SoftHSM:
    /// `CKR_FUNCTION_FAILED`); a failed RFC 5649 integrity check is ``isRejectedWrappedKey(_:)``.
    static func isRefusedPrivateKey(_ error: PKCS11Error) -> Bool {
        error.function == .unwrapKey
            && [.functionFailed, .templateInconsistent, .templateIncomplete, .keyTypeInconsistent, .attributeValueInvalid].contains(error.returnValue)
    }

    /// What tokens answer for wrapped input that does not decrypt or unpad.
    static func isRejectedWrappedKey(_ error: PKCS11Error) -> Bool {
        error.function == .unwrapKey
            && [.wrappedKeyInvalid, .wrappedKeyLenRange, .encryptedDataInvalid, .encryptedDataLenRange, .dataInvalid, .dataLenRange, .generalError]
                .contains(error.returnValue)
    }
}

extension BackingKeyKind {
    var isKeyPair: Bool {
        if case .keyPair = self { return true }
        return false
    }

    /// Key material lengths ImportKeyMaterial accepts, as AWS sizes them.
    var importableLengths: ClosedRange<Int> {
        switch self {
        case .aes256: 32...32
        case .hmac(.hmacSHA224): 28...64
        case .hmac(.hmacSHA256): 32...64
        case .hmac(.hmacSHA384): 48...128
        case .hmac(.hmacSHA512): 64...128
        case .keyPair: 0...0
        }
    }
}

extension KMSError.Code {
    public static let incorrectKeyMaterial = KMSError.Code(rawValue: "IncorrectKeyMaterialException")
}
