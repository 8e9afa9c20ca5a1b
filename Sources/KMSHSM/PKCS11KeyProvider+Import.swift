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

    /// What tokens answer for wrapped input that does not decrypt or unpad.
    static func isRejectedWrappedKey(_ error: PKCS11Error) -> Bool {
        error.function == .unwrapKey
            && [.wrappedKeyInvalid, .wrappedKeyLenRange, .encryptedDataInvalid, .encryptedDataLenRange, .dataInvalid, .dataLenRange, .generalError]
                .contains(error.returnValue)
    }
}

extension BackingKeyKind {
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
