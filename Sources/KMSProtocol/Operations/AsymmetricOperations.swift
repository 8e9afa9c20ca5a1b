import KMS

struct GetPublicKeyRequest: Decodable, Sendable {
    var KeyId: String?
    var GrantTokens: [String]?
}

struct GetPublicKeyResponse: Encodable, Sendable {
    var KeyId: String
    var PublicKey: Blob
    var CustomerMasterKeySpec: String
    var KeySpec: String
    var KeyUsage: String
    var EncryptionAlgorithms: [String]?
    var SigningAlgorithms: [String]?
    var KeyAgreementAlgorithms: [String]?
}

struct SignRequest: Decodable, Sendable {
    var KeyId: String?
    var Message: Blob?
    var MessageType: String?
    var SigningAlgorithm: String?
    var GrantTokens: [String]?
    var DryRun: Bool?
}

struct SignResponse: Encodable, Sendable {
    var KeyId: String
    var Signature: Blob
    var SigningAlgorithm: String
}

struct VerifyRequest: Decodable, Sendable {
    var KeyId: String?
    var Message: Blob?
    var MessageType: String?
    var Signature: Blob?
    var SigningAlgorithm: String?
    var GrantTokens: [String]?
    var DryRun: Bool?
}

struct VerifyResponse: Encodable, Sendable {
    var KeyId: String
    var SignatureValid: Bool
    var SigningAlgorithm: String
}

struct DeriveSharedSecretRequest: Decodable, Sendable {
    var KeyId: String?
    var KeyAgreementAlgorithm: String?
    var PublicKey: Blob?
    var GrantTokens: [String]?
    var DryRun: Bool?
    var Recipient: RecipientInfo?
}

struct DeriveSharedSecretResponse: Encodable, Sendable {
    var KeyId: String
    var SharedSecret: Blob
    var KeyOrigin: String
    var KeyAgreementAlgorithm: String
}

struct GenerateDataKeyPairRequest: Decodable, Sendable {
    var KeyId: String?
    var KeyPairSpec: String?
    var EncryptionContext: [String: String]?
    var GrantTokens: [String]?
    var DryRun: Bool?
    var Recipient: RecipientInfo?
}

struct GenerateDataKeyPairResponse: Encodable, Sendable {
    var PrivateKeyCiphertextBlob: Blob
    var PrivateKeyPlaintext: Blob?
    var PublicKey: Blob
    var KeyId: String
    var KeyPairSpec: String
}

extension KeyManagementService {
    func asymmetricOperations() -> [String: Operation] {
        [
            "GetPublicKey": .json(GetPublicKeyRequest.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                let result = try await self.getPublicKey(try required(request.KeyId, "KeyId"), caller: caller)
                let key = result.key
                return GetPublicKeyResponse(
                    KeyId: result.keyARN, PublicKey: Blob(result.publicKey), CustomerMasterKeySpec: key.keySpec.rawValue,
                    KeySpec: key.keySpec.rawValue, KeyUsage: key.keyUsage.rawValue,
                    EncryptionAlgorithms: key.encryptionAlgorithms.isEmpty ? nil : key.encryptionAlgorithms,
                    SigningAlgorithms: key.signingAlgorithms.isEmpty ? nil : key.signingAlgorithms,
                    KeyAgreementAlgorithms: key.keyAgreementAlgorithms.isEmpty ? nil : key.keyAgreementAlgorithms)
            },
            "Sign": .json(SignRequest.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                let result = try await self.sign(
                    keyID: try required(request.KeyId, "KeyId"), message: try required(request.Message, "Message").bytes,
                    messageType: request.MessageType, algorithm: try required(request.SigningAlgorithm, "SigningAlgorithm"),
                    dryRun: request.DryRun, caller: caller)
                return SignResponse(KeyId: result.keyARN, Signature: Blob(result.signature), SigningAlgorithm: result.algorithm.rawValue)
            },
            "Verify": .json(VerifyRequest.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                let result = try await self.verify(
                    keyID: try required(request.KeyId, "KeyId"), message: try required(request.Message, "Message").bytes,
                    messageType: request.MessageType, signature: try required(request.Signature, "Signature").bytes,
                    algorithm: try required(request.SigningAlgorithm, "SigningAlgorithm"), dryRun: request.DryRun, caller: caller)
                return VerifyResponse(KeyId: result.keyARN, SignatureValid: true, SigningAlgorithm: result.algorithm.rawValue)
            },
            "DeriveSharedSecret": .json(DeriveSharedSecretRequest.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                try Self.rejectRecipient(request.Recipient)
                let result = try await self.deriveSharedSecret(
                    keyID: try required(request.KeyId, "KeyId"),
                    algorithm: try required(request.KeyAgreementAlgorithm, "KeyAgreementAlgorithm"),
                    publicKey: try required(request.PublicKey, "PublicKey").bytes, dryRun: request.DryRun, caller: caller)
                return DeriveSharedSecretResponse(
                    KeyId: result.keyARN, SharedSecret: Blob(result.sharedSecret), KeyOrigin: result.keyOrigin.rawValue,
                    KeyAgreementAlgorithm: Self.keyAgreementAlgorithm)
            },
            "GenerateDataKeyPair": .json(GenerateDataKeyPairRequest.self) { request, caller in
                try await self.generateDataKeyPair(request, includePlaintext: true, caller: caller)
            },
            "GenerateDataKeyPairWithoutPlaintext": .json(GenerateDataKeyPairRequest.self) { request, caller in
                try await self.generateDataKeyPair(request, includePlaintext: false, caller: caller)
            },
        ]
    }

    private func generateDataKeyPair(
        _ request: GenerateDataKeyPairRequest, includePlaintext: Bool, caller: Caller
    ) async throws -> GenerateDataKeyPairResponse {
        try validateGrantTokens(request.GrantTokens)
        try Self.rejectRecipient(request.Recipient)
        let result = try await generateDataKeyPair(
            keyID: try required(request.KeyId, "KeyId"), keyPairSpec: try required(request.KeyPairSpec, "KeyPairSpec"),
            context: EncryptionContext(request.EncryptionContext ?? [:]), includePlaintext: includePlaintext, dryRun: request.DryRun,
            caller: caller)
        return GenerateDataKeyPairResponse(
            PrivateKeyCiphertextBlob: Blob(result.privateKeyCiphertextBlob), PrivateKeyPlaintext: result.privateKeyPlaintext.map(Blob.init),
            PublicKey: Blob(result.publicKey), KeyId: result.keyARN, KeyPairSpec: result.keyPairSpec.rawValue)
    }
}
