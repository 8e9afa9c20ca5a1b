/// HMAC keys: GenerateMac and VerifyMac, computed and checked in the token.
extension KeyManagementService {
    public struct MacResult: Sendable {
        public var mac: [UInt8]
        public var keyARN: String
        public var algorithm: MacAlgorithm
    }

    public func generateMac(keyID: String, message: [UInt8], algorithm: String?, dryRun: Bool?, caller: Caller) async throws -> MacResult {
        let (key, backingKey, algorithm) = try await macKey(keyID, message: message, algorithm: algorithm, action: "kms:GenerateMac", grant: .generateMac, caller: caller)
        try rejectDryRun(dryRun)
        let mac = try await provider.generateMac(message, under: backingKey, algorithm: algorithm)
        recordUse(of: key, "GenerateMac")
        return MacResult(mac: mac, keyARN: arn(key), algorithm: algorithm)
    }

    /// Succeeds only when the MAC is right; a wrong one is `KMSInvalidMacException`, as in AWS.
    public func verifyMac(keyID: String, message: [UInt8], mac: [UInt8], algorithm: String?, dryRun: Bool?, caller: Caller) async throws -> MacResult {
        try validateLength(mac.count, "mac", min: 1, max: 6144)
        let (key, backingKey, algorithm) = try await macKey(keyID, message: message, algorithm: algorithm, action: "kms:VerifyMac", grant: .verifyMac, caller: caller)
        try rejectDryRun(dryRun)
        guard try await provider.verifyMac(message, mac: mac, under: backingKey, algorithm: algorithm) else {
            throw KMSError(.invalidMac, "")
        }
        recordUse(of: key, "VerifyMac")
        return MacResult(mac: mac, keyARN: arn(key), algorithm: algorithm)
    }

    /// Checks the message, the algorithm, the key's usage and state, and authorizes the caller.
    private func macKey(
        _ keyID: String, message: [UInt8], algorithm: String?, action: String, grant: GrantOperation, caller: Caller
    ) async throws -> (KeyRecord, BackingKeyRecord, MacAlgorithm) {
        try validateLength(message.count, "message", min: 1, max: 4096)
        guard let algorithm else { throw KMSError.missing("macAlgorithm") }
        let requested = try validateEnum(algorithm, "macAlgorithm", as: MacAlgorithm.self)
        let resolved = try await resolveKey(keyID, allowAlias: true, caller: caller)
        let key = resolved.record
        try await authorize(action, resolved, grant: grant, caller: caller)
        guard key.keyUsage == .generateVerifyMAC, let keyAlgorithm = key.keySpec.macAlgorithm else {
            throw invalidKeyUsage(key, for: String(action.dropFirst(4)))
        }
        guard requested == keyAlgorithm else {
            throw KMSError(.invalidKeyUsage, "Algorithm \(requested.rawValue) is incompatible with key spec \(key.keySpec.rawValue).")
        }
        try requireEnabled(key)
        guard let backingKey = try await store.backingKey(key.materialOwner, version: key.currentVersion) else {
            throw KMSError(.internalFailure, "The backing key of \(arn(key)) is missing.")
        }
        return (key, backingKey, requested)
    }
}

extension KMSError.Code {
    public static let invalidMac = KMSError.Code(rawValue: "KMSInvalidMacException")
}
