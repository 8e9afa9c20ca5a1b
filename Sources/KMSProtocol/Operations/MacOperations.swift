import KMS

struct GenerateMacInput: Decodable, Sendable {
    var Message: Blob?
    var KeyId: String?
    var MacAlgorithm: String?
    var GrantTokens: [String]?
    var DryRun: Bool?
}

struct GenerateMacOutput: Encodable, Sendable {
    var Mac: Blob
    var MacAlgorithm: String
    var KeyId: String
}

struct VerifyMacInput: Decodable, Sendable {
    var Message: Blob?
    var KeyId: String?
    var MacAlgorithm: String?
    var Mac: Blob?
    var GrantTokens: [String]?
    var DryRun: Bool?
}

struct VerifyMacOutput: Encodable, Sendable {
    var KeyId: String
    var MacValid: Bool
    var MacAlgorithm: String
}

extension KeyManagementService {
    func macOperations() -> [String: Operation] {
        [
            "GenerateMac": .json(GenerateMacInput.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                let result = try await self.generateMac(
                    keyID: try required(request.KeyId, "KeyId"), message: try required(request.Message, "Message").bytes,
                    algorithm: try required(request.MacAlgorithm, "MacAlgorithm"), dryRun: request.DryRun, caller: caller)
                return GenerateMacOutput(Mac: Blob(result.mac), MacAlgorithm: result.algorithm.rawValue, KeyId: result.keyARN)
            },
            "VerifyMac": .json(VerifyMacInput.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                let result = try await self.verifyMac(
                    keyID: try required(request.KeyId, "KeyId"), message: try required(request.Message, "Message").bytes,
                    mac: try required(request.Mac, "Mac").bytes, algorithm: try required(request.MacAlgorithm, "MacAlgorithm"),
                    dryRun: request.DryRun, caller: caller)
                return VerifyMacOutput(KeyId: result.keyARN, MacValid: true, MacAlgorithm: result.algorithm.rawValue)
            },
        ]
    }
}
