import KMS
import JSON

/// One KMS operation on the wire: decodes its request from the parsed body, calls the service, encodes its
/// response (nil: no output, an empty body).
struct Operation: Sendable {
    let handle: @Sendable (_ request: JSONValue, _ caller: Caller) async throws -> JSONValue?

    static func json<Request: Decodable & SendableMetatype, Response: Encodable & SendableMetatype>(
        _ request: Request.Type, _ body: @escaping @Sendable (Request, Caller) async throws -> Response
    ) -> Operation {
        Operation { json, caller in
            let request = try AWSJSON.decode(Request.self, from: json)
            let response = try await body(request, caller)
            // Spelled out: a bare `nil` here would be JSONValue's nil literal, `.null`, and answer "null".
            if response is NoOutput { return JSONValue?.none }
            return try JSONValueCoding.encode(response)
        }
    }
}

extension KeyManagementService {
    /// Every operation of the AWS KMS API, by name. Operations Trent does not implement yet answer
    /// `UnsupportedOperationException`; names outside the API are `UnknownOperationException` (see the app).
    func operations() -> [String: Operation] {
        var table: [String: Operation] = [:]
        for name in Self.allOperationNames {
            table[name] = Operation { _, _ in
                throw KMSError(.unsupportedOperation, "Trent does not implement \(name) yet.")
            }
        }
        table.merge(keyOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(aliasAndTagOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(cryptographicOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(grantAndPolicyOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(rotationOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(macOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(asymmetricOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(importOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(usageOperations(), uniquingKeysWith: { _, implemented in implemented })
        table.merge(customKeyStoreOperations(), uniquingKeysWith: { _, implemented in implemented })
        return table
    }

    /// The operations of the AWS KMS API (API version 2014-11-01).
    static let allOperationNames = [
        "CancelKeyDeletion", "ConnectCustomKeyStore", "CreateAlias", "CreateCustomKeyStore", "CreateGrant", "CreateKey",
        "Decapsulate", "Decrypt", "DeleteAlias", "DeleteCustomKeyStore", "DeleteImportedKeyMaterial", "DeriveSharedSecret",
        "DescribeCustomKeyStores", "DescribeKey", "DisableKey", "DisableKeyRotation", "DisconnectCustomKeyStore", "EnableKey",
        "EnableKeyRotation", "Encapsulate", "Encrypt", "GenerateDataKey", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext", "GenerateMac", "GenerateRandom", "GetKeyLastUsage", "GetKeyPolicy",
        "GetKeyRotationStatus", "GetParametersForImport", "GetPublicKey", "ImportKeyMaterial", "ListAliases", "ListGrants",
        "ListKeyPolicies", "ListKeyRotations", "ListKeys", "ListResourceTags", "ListRetirableGrants", "PutKeyPolicy",
        "ReEncrypt", "ReplicateKey", "RetireGrant", "RevokeGrant", "RotateKeyOnDemand", "ScheduleKeyDeletion", "Sign",
        "TagResource", "UntagResource", "UpdateAlias", "UpdateCustomKeyStore", "UpdateKeyDescription", "UpdatePrimaryRegion",
        "Verify", "VerifyMac",
    ]
}
