import KMS

struct EncryptRequest: Decodable, Sendable {
    var KeyId: String?
    var Plaintext: Blob?
    var EncryptionContext: [String: String]?
    var GrantTokens: [String]?
    var EncryptionAlgorithm: String?
    var DryRun: Bool?
}

struct EncryptResponse: Encodable, Sendable {
    var CiphertextBlob: Blob
    var KeyId: String
    var EncryptionAlgorithm: String
}

struct DecryptRequest: Decodable, Sendable {
    var CiphertextBlob: Blob?
    var EncryptionContext: [String: String]?
    var GrantTokens: [String]?
    var KeyId: String?
    var EncryptionAlgorithm: String?
    var DryRun: Bool?
    var Recipient: RecipientInfo?
}

/// Nitro Enclaves attestation; Trent has no enclaves to attest.
struct RecipientInfo: Decodable, Sendable {
    var KeyEncryptionAlgorithm: String?
    var AttestationDocument: Blob?
}

struct DecryptResponse: Encodable, Sendable {
    var KeyId: String
    var Plaintext: Blob
    var EncryptionAlgorithm: String
}

struct ReEncryptRequest: Decodable, Sendable {
    var CiphertextBlob: Blob?
    var SourceEncryptionContext: [String: String]?
    var SourceKeyId: String?
    var DestinationKeyId: String?
    var DestinationEncryptionContext: [String: String]?
    var SourceEncryptionAlgorithm: String?
    var DestinationEncryptionAlgorithm: String?
    var GrantTokens: [String]?
    var DryRun: Bool?
}

struct ReEncryptResponse: Encodable, Sendable {
    var CiphertextBlob: Blob
    var SourceKeyId: String
    var KeyId: String
    var SourceEncryptionAlgorithm: String
    var DestinationEncryptionAlgorithm: String
}

struct GenerateDataKeyRequest: Decodable, Sendable {
    var KeyId: String?
    var EncryptionContext: [String: String]?
    var NumberOfBytes: Int?
    var KeySpec: String?
    var GrantTokens: [String]?
    var DryRun: Bool?
    var Recipient: RecipientInfo?
}

struct GenerateDataKeyResponse: Encodable, Sendable {
    var CiphertextBlob: Blob
    var Plaintext: Blob?
    var KeyId: String
}

struct GenerateRandomRequest: Decodable, Sendable {
    var NumberOfBytes: Int?
    var CustomKeyStoreId: String?
    var Recipient: RecipientInfo?
}

struct GenerateRandomResponse: Encodable, Sendable { var Plaintext: Blob }

extension KeyManagementService {
    func cryptographicOperations() -> [String: Operation] {
        [
            "Encrypt": .json(EncryptRequest.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                let result = try await self.encrypt(
                    keyID: try required(request.KeyId, "KeyId"), plaintext: try required(request.Plaintext, "Plaintext").bytes,
                    context: EncryptionContext(request.EncryptionContext ?? [:]), algorithm: request.EncryptionAlgorithm,
                    dryRun: request.DryRun, caller: caller)
                return EncryptResponse(
                    CiphertextBlob: Blob(result.ciphertextBlob), KeyId: result.keyARN, EncryptionAlgorithm: result.encryptionAlgorithm)
            },
            "Decrypt": .json(DecryptRequest.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                try Self.rejectRecipient(request.Recipient)
                let result = try await self.decrypt(
                    ciphertext: try required(request.CiphertextBlob, "CiphertextBlob").bytes,
                    context: EncryptionContext(request.EncryptionContext ?? [:]), keyID: request.KeyId,
                    algorithm: request.EncryptionAlgorithm, dryRun: request.DryRun, caller: caller)
                return DecryptResponse(KeyId: result.keyARN, Plaintext: Blob(result.plaintext), EncryptionAlgorithm: result.encryptionAlgorithm)
            },
            "ReEncrypt": .json(ReEncryptRequest.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                let result = try await self.reEncrypt(
                    ciphertext: try required(request.CiphertextBlob, "CiphertextBlob").bytes,
                    sourceContext: EncryptionContext(request.SourceEncryptionContext ?? [:]), sourceKeyID: request.SourceKeyId,
                    sourceAlgorithm: request.SourceEncryptionAlgorithm,
                    destinationKeyID: try required(request.DestinationKeyId, "DestinationKeyId"),
                    destinationContext: EncryptionContext(request.DestinationEncryptionContext ?? [:]),
                    destinationAlgorithm: request.DestinationEncryptionAlgorithm, dryRun: request.DryRun, caller: caller)
                return ReEncryptResponse(
                    CiphertextBlob: Blob(result.ciphertextBlob), SourceKeyId: result.sourceKeyARN, KeyId: result.keyARN,
                    SourceEncryptionAlgorithm: result.sourceEncryptionAlgorithm,
                    DestinationEncryptionAlgorithm: result.destinationEncryptionAlgorithm)
            },
            "GenerateDataKey": .json(GenerateDataKeyRequest.self) { request, caller in
                try await self.generateDataKey(request, includePlaintext: true, caller: caller)
            },
            "GenerateDataKeyWithoutPlaintext": .json(GenerateDataKeyRequest.self) { request, caller in
                try await self.generateDataKey(request, includePlaintext: false, caller: caller)
            },
            "GenerateRandom": .json(GenerateRandomRequest.self) { request, caller in
                try Self.rejectRecipient(request.Recipient)
                let bytes = try await self.generateRandom(
                    numberOfBytes: request.NumberOfBytes, customKeyStoreID: request.CustomKeyStoreId, caller: caller)
                return GenerateRandomResponse(Plaintext: Blob(bytes))
            },
        ]
    }

    private func generateDataKey(_ request: GenerateDataKeyRequest, includePlaintext: Bool, caller: Caller) async throws -> GenerateDataKeyResponse {
        try Self.rejectRecipient(request.Recipient)
        try validateGrantTokens(request.GrantTokens)
        let result = try await generateDataKey(
            keyID: try required(request.KeyId, "KeyId"), keySpec: request.KeySpec, numberOfBytes: request.NumberOfBytes,
            context: EncryptionContext(request.EncryptionContext ?? [:]), includePlaintext: includePlaintext,
            dryRun: request.DryRun, caller: caller)
        return GenerateDataKeyResponse(
            CiphertextBlob: Blob(result.ciphertextBlob), Plaintext: result.plaintext.map(Blob.init), KeyId: result.keyARN)
    }

    static func rejectRecipient(_ recipient: RecipientInfo?) throws {
        if recipient != nil {
            throw KMSError(.unsupportedOperation, "Trent has no Nitro Enclaves: the Recipient parameter is not supported.")
        }
    }
}
