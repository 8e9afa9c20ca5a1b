/// Encrypt, Decrypt, ReEncrypt, data keys and random bytes: with symmetric keys, and RSA keys for Encrypt,
/// Decrypt and ReEncrypt.
extension KeyManagementService {
    public static let symmetricAlgorithm = "SYMMETRIC_DEFAULT"
    static let encryptionAlgorithms = ["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"]

    public struct EncryptResult: Sendable {
        public var ciphertextBlob: [UInt8]
        public var keyARN: String
        public var encryptionAlgorithm: String
    }

    public struct DecryptResult: Sendable {
        public var plaintext: [UInt8]
        public var keyARN: String
        public var encryptionAlgorithm: String
    }

    public struct ReEncryptResult: Sendable {
        public var ciphertextBlob: [UInt8]
        public var sourceKeyARN: String
        public var keyARN: String
        public var sourceEncryptionAlgorithm: String
        public var destinationEncryptionAlgorithm: String
    }

    public struct DataKeyResult: Sendable {
        /// Nil for GenerateDataKeyWithoutPlaintext.
        public var plaintext: [UInt8]?
        public var ciphertextBlob: [UInt8]
        public var keyARN: String
    }

    // MARK: Operations

    public func encrypt(
        keyID: String, plaintext: [UInt8], context: EncryptionContext, algorithm: String?, dryRun: Bool?, caller: Caller
    ) async throws -> EncryptResult {
        try validateLength(plaintext.count, "plaintext", min: 1, max: 4096)
        try context.validate(member: "encryptionContext")
        let resolved = try await resolveKey(keyID, allowAlias: true, caller: caller)
        let key = resolved.record
        let algorithm = try validateAlgorithm(algorithm, member: "encryptionAlgorithm")
        try await authorize(
            "kms:Encrypt", resolved, grant: .encrypt, encryptionContext: context, context: .algorithm(algorithm), caller: caller)
        try requireAlgorithm(algorithm, supportedBy: key, for: "Encrypt")
        try requireEnabled(key)
        try requireContextSupported(by: key, context)
        try rejectDryRun(dryRun)
        let blob = try await seal(plaintext, under: key, context: context, algorithm: algorithm)
        recordUse(of: key, "Encrypt")
        return EncryptResult(ciphertextBlob: blob, keyARN: arn(key), encryptionAlgorithm: algorithm)
    }

    public func decrypt(
        ciphertext: [UInt8], context: EncryptionContext, keyID: String?, algorithm: String?, dryRun: Bool?, caller: Caller
    ) async throws -> DecryptResult {
        try validateLength(ciphertext.count, "ciphertextBlob", min: 1, max: 6144)
        try context.validate(member: "encryptionContext")
        let (key, plaintext, algorithm) = try await open(
            ciphertext, context: context, keyID: keyID, algorithm: algorithm, members: ("keyId", "encryptionAlgorithm"),
            action: ("kms:Decrypt", .decrypt, "Decrypt"), dryRun: dryRun, caller: caller)
        recordUse(of: key, "Decrypt")
        return DecryptResult(plaintext: plaintext, keyARN: arn(key), encryptionAlgorithm: algorithm)
    }

    public func reEncrypt(
        ciphertext: [UInt8], sourceContext: EncryptionContext, sourceKeyID: String?, sourceAlgorithm: String?,
        destinationKeyID: String, destinationContext: EncryptionContext, destinationAlgorithm: String?,
        dryRun: Bool?, caller: Caller
    ) async throws -> ReEncryptResult {
        try validateLength(ciphertext.count, "ciphertextBlob", min: 1, max: 6144)
        try sourceContext.validate(member: "sourceEncryptionContext")
        try destinationContext.validate(member: "destinationEncryptionContext")
        let resolvedDestination = try await resolveKey(destinationKeyID, member: "destinationKeyId", allowAlias: true, caller: caller)
        let destination = resolvedDestination.record
        let destinationAlgorithm = try validateAlgorithm(destinationAlgorithm, member: "destinationEncryptionAlgorithm")
        let (source, plaintext, sourceAlgorithm) = try await open(
            ciphertext, context: sourceContext, keyID: sourceKeyID, algorithm: sourceAlgorithm,
            members: ("sourceKeyId", "sourceEncryptionAlgorithm"), action: ("kms:ReEncryptFrom", .reEncryptFrom, "ReEncrypt"), dryRun: nil,
            caller: caller)
        try await authorize(
            "kms:ReEncryptTo", resolvedDestination, grant: .reEncryptTo, encryptionContext: destinationContext,
            context: .algorithm(destinationAlgorithm), caller: caller)
        try requireAlgorithm(destinationAlgorithm, supportedBy: destination, for: "ReEncrypt")
        try requireEnabled(destination)
        try requireContextSupported(by: destination, destinationContext)
        try rejectDryRun(dryRun)
        let blob = try await seal(plaintext, under: destination, context: destinationContext, algorithm: destinationAlgorithm)
        recordUse(of: source, "ReEncrypt")
        recordUse(of: destination, "ReEncrypt")
        return ReEncryptResult(
            ciphertextBlob: blob, sourceKeyARN: arn(source), keyARN: arn(destination),
            sourceEncryptionAlgorithm: sourceAlgorithm, destinationEncryptionAlgorithm: destinationAlgorithm)
    }

    /// Returns a data key from the token's RNG, and the same key encrypted under the KMS key.
    public func generateDataKey(
        keyID: String, keySpec: String?, numberOfBytes: Int?, context: EncryptionContext, includePlaintext: Bool,
        dryRun: Bool?, caller: Caller
    ) async throws -> DataKeyResult {
        let length: Int
        switch (keySpec, numberOfBytes) {
        case (nil, nil), (.some, .some):
            throw KMSError(.validation, "Please specify either number of bytes or key spec.")
        case (let spec?, nil):
            switch spec {
            case "AES_256": length = 32
            case "AES_128": length = 16
            default: throw KMSError.constraint("keySpec", "Member must satisfy enum value set: [AES_256, AES_128]", value: spec)
            }
        case (nil, let count?):
            try validateRange(count, "numberOfBytes", min: 1, max: 1024)
            length = count
        }
        try context.validate(member: "encryptionContext")
        let resolved = try await resolveKey(keyID, allowAlias: true, caller: caller)
        let key = resolved.record
        try await authorize(
            includePlaintext ? "kms:GenerateDataKey" : "kms:GenerateDataKeyWithoutPlaintext", resolved,
            grant: includePlaintext ? .generateDataKey : .generateDataKeyWithoutPlaintext, encryptionContext: context, caller: caller)
        try requireEnabled(key)
        try requireSymmetricEncryption(key, for: includePlaintext ? "GenerateDataKey" : "GenerateDataKeyWithoutPlaintext")
        try rejectDryRun(dryRun)
        let dataKey = try await provider.generateRandom(count: length)
        let blob = try await seal(dataKey, under: key, context: context, algorithm: Self.symmetricAlgorithm)
        recordUse(of: key, includePlaintext ? "GenerateDataKey" : "GenerateDataKeyWithoutPlaintext")
        return DataKeyResult(plaintext: includePlaintext ? dataKey : nil, ciphertextBlob: blob, keyARN: arn(key))
    }

    public func generateRandom(numberOfBytes: Int?, customKeyStoreID: String?, caller: Caller) async throws -> [UInt8] {
        guard let count = numberOfBytes else { throw KMSError(.validation, "NumberOfBytes is required.") }
        try validateRange(count, "numberOfBytes", min: 1, max: 1024)
        try await authorizer.authorize(AuthorizationRequest("kms:GenerateRandom"), caller: caller)
        if let customKeyStoreID {
            return try await generateRandom(count: count, inCustomKeyStore: customKeyStoreID, caller: caller)
        }
        return try await provider.generateRandom(count: count)
    }

    // MARK: Shared steps

    /// The request's encryption algorithm (SYMMETRIC_DEFAULT when absent), checked against the API's values only:
    /// what a key supports is told only to a caller authorized to use it (``requireAlgorithm(_:supportedBy:for:)``).
    private func validateAlgorithm(_ algorithm: String?, member: String) throws(KMSError) -> String {
        guard let algorithm else { return Self.symmetricAlgorithm }
        guard Self.encryptionAlgorithms.contains(algorithm) else {
            throw KMSError.constraint(
                member, "Member must satisfy enum value set: [\(Self.encryptionAlgorithms.joined(separator: ", "))]", value: algorithm)
        }
        return algorithm
    }

    /// The key must encrypt (symmetric encryption keys, and RSA keys for ENCRYPT_DECRYPT) and support the algorithm;
    /// checked after authorization, the usage first, as AWS does. `operation` is the API operation's name, which
    /// AWS's message names.
    private func requireAlgorithm(_ algorithm: String, supportedBy key: KeyRecord, for operation: String) throws(KMSError) {
        guard key.keyUsage == .encryptDecrypt, key.keySpec == .symmetricDefault || key.keySpec.keyPairSpec?.isRSA == true else {
            throw invalidKeyUsage(key, for: operation)
        }
        guard key.encryptionAlgorithms.contains(algorithm) else {
            throw KMSError(.invalidKeyUsage, "The encryption algorithm \(algorithm) is not supported by \(arn(key)).")
        }
    }

    /// RSA keys take no encryption context.
    private func requireContextSupported(by key: KeyRecord, _ context: EncryptionContext) throws(KMSError) {
        if key.keySpec != .symmetricDefault && !context.isEmpty {
            throw KMSError(.validation, "EncryptionContext is supported only with symmetric encryption KMS keys; \(arn(key)) is \(key.keySpec.rawValue).")
        }
    }

    func requireSymmetricEncryption(_ key: KeyRecord, for operation: String) throws(KMSError) {
        guard key.keySpec == .symmetricDefault, key.keyUsage == .encryptDecrypt else {
            throw invalidKeyUsage(key, for: operation)
        }
    }

    /// AWS's answer to a key used for what its usage does not allow, naming the API operation ("Encrypt").
    func invalidKeyUsage(_ key: KeyRecord, for operation: String) -> KMSError {
        KMSError(.invalidKeyUsage, "\(arn(key)) key usage is \(key.keyUsage.rawValue) which is not valid for \(operation).")
    }

    /// Encrypts under the key's current backing-key version, charging its nonce budget; RSA keys encrypt
    /// to their public key and return the bare RSA ciphertext, as AWS does.
    func seal(_ plaintext: [UInt8], under key: KeyRecord, context: EncryptionContext, algorithm: String) async throws -> [UInt8] {
        if let pair = key.keySpec.keyPairSpec {
            guard let rsa = RSAEncryptionAlgorithm(rawValue: algorithm), let bits = pair.rsaModulusBits else {
                throw KMSError(.invalidKeyUsage, "The encryption algorithm \(algorithm) is not supported by \(arn(key)).")
            }
            let limit = rsa.maximumPlaintextLength(modulusBits: bits)
            guard plaintext.count <= limit else {
                throw KMSError(.validation, "Algorithm \(algorithm) and key spec \(pair.rawValue) cannot encrypt data larger than \(limit) bytes.")
            }
            return try await provider.encrypt(plaintext, under: try await currentBackingKey(of: key), spec: pair, algorithm: rsa)
        }
        let tokenObject = try await customKeyStoreObject(of: key)
        let version = try await ledger.claimEncryption(for: key)
        guard var backingKey = try await store.backingKey(key.materialOwner, version: version) else {
            throw KMSError(.internalFailure, "Backing key version \(version) of \(arn(key)) is missing.")
        }
        backingKey.tokenObject = tokenObject
        let aad = try CiphertextBlob.additionalData(keyID: key.id, backingKeyVersion: version, context: context)
        let sealed = try await provider.encrypt(plaintext, under: backingKey, additionalData: aad)
        return CiphertextBlob(keyID: key.id, backingKeyVersion: version, iv: sealed.iv, sealed: sealed.ciphertextAndTag).bytes
    }

    /// Decrypts a blob, checking the optional KeyId the caller named against the key the blob names.
    private func open(
        _ ciphertext: [UInt8], context: EncryptionContext, keyID: String?, algorithm: String?,
        members: (keyID: String, algorithm: String), action: (name: String, grant: GrantOperation, operation: String), dryRun: Bool?,
        caller: Caller
    ) async throws -> (KeyRecord, [UInt8], String) {
        let named = try await keyID.asyncMap { try await resolveKey($0, member: members.keyID, allowAlias: true, caller: caller) }
        // An RSA ciphertext is bare: it names no key, so the caller names the key and the algorithm; any
        // other request reads the blob as a symmetric ciphertext.
        let algorithm = try validateAlgorithm(algorithm, member: members.algorithm)
        let rsaAlgorithm = RSAEncryptionAlgorithm(rawValue: algorithm)
        if rsaAlgorithm != nil && named == nil {
            throw KMSError(.validation, "\(members.keyID) is required to decrypt a ciphertext made with \(algorithm).")
        }
        // A key the caller names is authorized before anything about it (its type, whether the blob is its) is told.
        if let named {
            try await authorize(action.name, named, grant: action.grant, encryptionContext: context, context: .algorithm(algorithm), caller: caller)
        }
        if let named, let rsa = rsaAlgorithm {
            let key = named.record
            try requireAlgorithm(algorithm, supportedBy: key, for: action.operation)
            guard let pair = key.keySpec.keyPairSpec else {
                throw KMSError(.invalidKeyUsage, "The encryption algorithm \(algorithm) is not supported by \(arn(key)).")
            }
            try requireEnabled(key)
            try requireContextSupported(by: key, context)
            try rejectDryRun(dryRun)
            let plaintext = try await provider.decrypt(ciphertext, under: try await currentBackingKey(of: key), spec: pair, algorithm: rsa)
            return (key, plaintext, algorithm)
        }
        let blob = try CiphertextBlob(parsing: ciphertext, region: location.region(of: caller))
        let key: KeyRecord
        if let named {
            guard named.record.id == blob.keyID else {
                throw KMSError(.incorrectKey, "The key ID in the request does not identify a CMK that can perform this operation.")
            }
            key = named.record
        } else {
            // A key of another Region is not found there, as in AWS.
            guard let blobKey = try await store.key(blob.keyID), blobKey.region == location.region(of: caller) else {
                throw KMSError(.invalidCiphertext, "")
            }
            try await authorize(
                action.name, ResolvedKey(record: blobKey, requestAlias: nil), grant: action.grant, encryptionContext: context,
                context: .algorithm(algorithm), caller: caller)
            key = blobKey
        }
        try requireAlgorithm(algorithm, supportedBy: key, for: action.operation)
        try requireEnabled(key)
        try requireSymmetricEncryption(key, for: action.operation)
        try rejectDryRun(dryRun)
        let tokenObject = try await customKeyStoreObject(of: key)
        guard var backingKey = try await store.backingKey(key.materialOwner, version: blob.backingKeyVersion) else {
            throw KMSError(.invalidCiphertext, "")
        }
        backingKey.tokenObject = tokenObject
        let aad = try CiphertextBlob.additionalData(keyID: key.id, backingKeyVersion: blob.backingKeyVersion, context: context)
        let plaintext = try await provider.decrypt(SealedData(iv: blob.iv, ciphertextAndTag: blob.sealed), under: backingKey, additionalData: aad)
        return (key, plaintext, algorithm)
    }
}

extension ConditionContext {
    /// `kms:EncryptionAlgorithm` of a cryptographic request.
    static func algorithm(_ algorithm: String) -> ConditionContext {
        var context = ConditionContext()
        context.set("kms:EncryptionAlgorithm", algorithm)
        return context
    }
}
