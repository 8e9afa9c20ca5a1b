/// Asymmetric keys: GetPublicKey, Sign, Verify, DeriveSharedSecret, and data key pairs.
extension KeyManagementService {
    public struct PublicKeyResult: Sendable {
        public var key: KeyRecord
        public var keyARN: String
        public var publicKey: [UInt8]
    }

    public struct SignatureResult: Sendable {
        public var keyARN: String
        public var signature: [UInt8]
        public var algorithm: SigningAlgorithm
    }

    public struct SharedSecretResult: Sendable {
        public var keyARN: String
        public var sharedSecret: [UInt8]
        public var keyOrigin: KeyOrigin
    }

    public struct DataKeyPairResult: Sendable {
        /// Nil for GenerateDataKeyPairWithoutPlaintext.
        public var privateKeyPlaintext: [UInt8]?
        public var privateKeyCiphertextBlob: [UInt8]
        public var publicKey: [UInt8]
        public var keyARN: String
        public var keyPairSpec: KeyPairSpec
    }

    public static let keyAgreementAlgorithm = "ECDH"

    public func getPublicKey(_ keyID: String, caller: Caller) async throws -> PublicKeyResult {
        let resolved = try await resolveKey(keyID, allowAlias: true, caller: caller)
        let key = resolved.record
        try await authorize("kms:GetPublicKey", resolved, grant: .getPublicKey, caller: caller)
        guard key.keySpec.keyPairSpec != nil else {
            throw KMSError(.unsupportedOperation, "\(arn(key)) is a \(key.keySpec.rawValue) key, which has no public key.")
        }
        try requireEnabled(key)
        guard let publicKey = try await currentBackingKey(of: key).publicKey else {
            throw KMSError(.internalFailure, "The public key of \(arn(key)) is missing.")
        }
        recordUse(of: key, "GetPublicKey")
        return PublicKeyResult(key: key, keyARN: arn(key), publicKey: publicKey)
    }

    public func sign(
        keyID: String, message: [UInt8], messageType: String?, algorithm: String?, dryRun: Bool?, caller: Caller
    ) async throws -> SignatureResult {
        let (key, pair, type, algorithm) = try await signingKey(
            keyID, message: message, messageType: messageType, algorithm: algorithm, action: "kms:Sign", grant: .sign, caller: caller)
        try rejectDryRun(dryRun)
        let signature = try await provider.sign(message, type: type, under: try await currentBackingKey(of: key), spec: pair, algorithm: algorithm)
        recordUse(of: key, "Sign")
        return SignatureResult(keyARN: arn(key), signature: signature, algorithm: algorithm)
    }

    /// Succeeds only for a valid signature; an invalid one is `KMSInvalidSignatureException`, as in AWS.
    public func verify(
        keyID: String, message: [UInt8], messageType: String?, signature: [UInt8], algorithm: String?, dryRun: Bool?, caller: Caller
    ) async throws -> SignatureResult {
        try validateLength(signature.count, "signature", min: 1, max: 6144)
        let (key, pair, type, algorithm) = try await signingKey(
            keyID, message: message, messageType: messageType, algorithm: algorithm, action: "kms:Verify", grant: .verify, caller: caller)
        try rejectDryRun(dryRun)
        let valid = try await provider.verify(
            message, type: type, signature: signature, under: try await currentBackingKey(of: key), spec: pair, algorithm: algorithm)
        guard valid else {
            throw KMSError(.invalidSignature, "")
        }
        recordUse(of: key, "Verify")
        return SignatureResult(keyARN: arn(key), signature: signature, algorithm: algorithm)
    }

    public func deriveSharedSecret(
        keyID: String, algorithm: String?, publicKey: [UInt8], dryRun: Bool?, caller: Caller
    ) async throws -> SharedSecretResult {
        guard let algorithm else { throw KMSError.missing("keyAgreementAlgorithm") }
        guard algorithm == Self.keyAgreementAlgorithm else {
            throw KMSError.constraint("keyAgreementAlgorithm", "Member must satisfy enum value set: [ECDH]", value: algorithm)
        }
        try validateLength(publicKey.count, "publicKey", min: 1, max: 8192)
        let resolved = try await resolveKey(keyID, allowAlias: true, caller: caller)
        let key = resolved.record
        var conditions = ConditionContext()
        conditions.set("kms:KeyAgreementAlgorithm", algorithm)
        try await authorize("kms:DeriveSharedSecret", resolved, grant: .deriveSharedSecret, context: conditions, caller: caller)
        guard key.keyUsage == .keyAgreement, let pair = key.keySpec.keyPairSpec else {
            throw invalidKeyUsage(key, for: "DeriveSharedSecret")
        }
        try requireEnabled(key)
        try rejectDryRun(dryRun)
        let secret = try await provider.deriveSharedSecret(peerPublicKey: publicKey, under: try await currentBackingKey(of: key), spec: pair)
        recordUse(of: key, "DeriveSharedSecret")
        return SharedSecretResult(keyARN: arn(key), sharedSecret: secret, keyOrigin: key.origin)
    }

    /// A key pair made in the token; its private key is returned encrypted under the symmetric KMS key with
    /// the encryption context (and in plaintext too, unless `includePlaintext` is false).
    public func generateDataKeyPair(
        keyID: String, keyPairSpec: String?, context: EncryptionContext, includePlaintext: Bool, dryRun: Bool?, caller: Caller
    ) async throws -> DataKeyPairResult {
        guard let keyPairSpec else { throw KMSError.missing("keyPairSpec") }
        // A spec of the API that this token cannot hold (ECC_NIST_EDWARDS25519) says why, as CreateKey does.
        if KeyPairSpec(rawValue: keyPairSpec) == nil, let known = KeySpec(rawValue: keyPairSpec),
            let refusal = provider.unavailability(of: known)
        {
            throw KMSError(.unsupportedOperation, refusal)
        }
        let spec = try validateEnum(keyPairSpec, "keyPairSpec", as: KeyPairSpec.self)
        try context.validate(member: "encryptionContext")
        let resolved = try await resolveKey(keyID, allowAlias: true, caller: caller)
        let key = resolved.record
        var conditions = ConditionContext.algorithm(Self.symmetricAlgorithm)
        conditions.set("kms:DataKeyPairSpec", spec.rawValue)
        try await authorize(
            includePlaintext ? "kms:GenerateDataKeyPair" : "kms:GenerateDataKeyPairWithoutPlaintext", resolved,
            grant: includePlaintext ? .generateDataKeyPair : .generateDataKeyPairWithoutPlaintext, encryptionContext: context,
            context: conditions, caller: caller)
        try requireEnabled(key)
        try requireSymmetricEncryption(key, for: includePlaintext ? "GenerateDataKeyPair" : "GenerateDataKeyPairWithoutPlaintext")
        try rejectDryRun(dryRun)
        let (privateKey, publicKey) = try await provider.generateDataKeyPair(spec)
        let blob = try await seal(privateKey, under: key, context: context, algorithm: Self.symmetricAlgorithm)
        recordUse(of: key, includePlaintext ? "GenerateDataKeyPair" : "GenerateDataKeyPairWithoutPlaintext")
        return DataKeyPairResult(
            privateKeyPlaintext: includePlaintext ? privateKey : nil, privateKeyCiphertextBlob: blob, publicKey: publicKey,
            keyARN: arn(key), keyPairSpec: spec)
    }

    // MARK: Shared steps

    /// Asymmetric keys never rotate, so their one backing key is the current one.
    func currentBackingKey(of key: KeyRecord) async throws -> BackingKeyRecord {
        guard let backingKey = try await store.backingKey(key.materialOwner, version: key.currentVersion) else {
            throw KMSError(.internalFailure, "The backing key of \(arn(key)) is missing.")
        }
        return backingKey
    }

    /// Checks the message, its type and the algorithm against the key, and authorizes the caller.
    private func signingKey(
        _ keyID: String, message: [UInt8], messageType: String?, algorithm: String?, action: String, grant: GrantOperation, caller: Caller
    ) async throws -> (KeyRecord, KeyPairSpec, MessageType, SigningAlgorithm) {
        try validateLength(message.count, "message", min: 1, max: 4096)
        let type = try messageType.map { text throws(KMSError) in try validateEnum(text, "messageType", as: MessageType.self) } ?? .raw
        guard let algorithm else { throw KMSError.missing("signingAlgorithm") }
        let requested = try validateEnum(algorithm, "signingAlgorithm", as: SigningAlgorithm.self)
        let resolved = try await resolveKey(keyID, allowAlias: true, caller: caller)
        let key = resolved.record
        var conditions = ConditionContext()
        conditions.set("kms:SigningAlgorithm", requested.rawValue)
        conditions.set("kms:MessageType", type.rawValue)
        try await authorize(action, resolved, grant: grant, context: conditions, caller: caller)
        guard key.keyUsage == .signVerify, let pair = key.keySpec.keyPairSpec else {
            throw invalidKeyUsage(key, for: String(action.dropFirst(4)))
        }
        guard pair.signingAlgorithms.contains(requested) else {
            throw KMSError(.invalidKeyUsage, "Algorithm \(requested.rawValue) is incompatible with key spec \(pair.rawValue).")
        }
        switch type {
        case .raw: break
        case .digest:
            guard message.count == requested.digest.length else {
                throw KMSError(.validation, "Digest is invalid length for algorithm \(requested.rawValue).")
            }
        case .externalMu:
            throw KMSError(.validation, "MessageType EXTERNAL_MU is valid only with ML-DSA keys.")
        }
        try requireEnabled(key)
        return (key, pair, type, requested)
    }
}

extension KMSError.Code {
    public static let invalidSignature = KMSError.Code(rawValue: "KMSInvalidSignatureException")
}
