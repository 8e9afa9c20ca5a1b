import JSON

/// The decode step of every implemented operation without a service: the input type each operation's
/// `Operation.json` reads its body into (see the `…Operations()` tables next to this file), by name.
///
/// For the fuzzer (Tests/Fuzz), which runs a hostile body through every operation's decoding. Keep it in step
/// with the tables: an operation added or given another input type there belongs here too (the fuzzer's corpus
/// replay checks that every name is an operation of the API).
enum OperationInputs {
    static let decoders: [(name: String, decode: @Sendable (JSONValue) throws -> Void)] = [
        ("CancelKeyDeletion", { _ = try AWSJSON.decode(KeyIDRequest.self, from: $0) }),
        ("ConnectCustomKeyStore", { _ = try AWSJSON.decode(CustomKeyStoreIDInput.self, from: $0) }),
        ("CreateAlias", { _ = try AWSJSON.decode(AliasRequest.self, from: $0) }),
        ("CreateCustomKeyStore", { _ = try AWSJSON.decode(CreateCustomKeyStoreInput.self, from: $0) }),
        ("CreateGrant", { _ = try AWSJSON.decode(CreateGrantInput.self, from: $0) }),
        ("CreateKey", { _ = try AWSJSON.decode(CreateKeyInput.self, from: $0) }),
        ("Decrypt", { _ = try AWSJSON.decode(DecryptRequest.self, from: $0) }),
        ("DeleteAlias", { _ = try AWSJSON.decode(AliasRequest.self, from: $0) }),
        ("DeleteCustomKeyStore", { _ = try AWSJSON.decode(CustomKeyStoreIDInput.self, from: $0) }),
        ("DeleteImportedKeyMaterial", { _ = try AWSJSON.decode(DeleteImportedKeyMaterialRequest.self, from: $0) }),
        ("DeriveSharedSecret", { _ = try AWSJSON.decode(DeriveSharedSecretRequest.self, from: $0) }),
        ("DescribeCustomKeyStores", { _ = try AWSJSON.decode(DescribeCustomKeyStoresInput.self, from: $0) }),
        ("DescribeKey", { _ = try AWSJSON.decode(KeyIDRequest.self, from: $0) }),
        ("DisableKey", { _ = try AWSJSON.decode(KeyIDRequest.self, from: $0) }),
        ("DisableKeyRotation", { _ = try AWSJSON.decode(KeyIDRequest.self, from: $0) }),
        ("DisconnectCustomKeyStore", { _ = try AWSJSON.decode(CustomKeyStoreIDInput.self, from: $0) }),
        ("EnableKey", { _ = try AWSJSON.decode(KeyIDRequest.self, from: $0) }),
        ("EnableKeyRotation", { _ = try AWSJSON.decode(EnableKeyRotationInput.self, from: $0) }),
        ("Encrypt", { _ = try AWSJSON.decode(EncryptRequest.self, from: $0) }),
        ("GenerateDataKey", { _ = try AWSJSON.decode(GenerateDataKeyRequest.self, from: $0) }),
        ("GenerateDataKeyPair", { _ = try AWSJSON.decode(GenerateDataKeyPairRequest.self, from: $0) }),
        ("GenerateDataKeyPairWithoutPlaintext", { _ = try AWSJSON.decode(GenerateDataKeyPairRequest.self, from: $0) }),
        ("GenerateDataKeyWithoutPlaintext", { _ = try AWSJSON.decode(GenerateDataKeyRequest.self, from: $0) }),
        ("GenerateMac", { _ = try AWSJSON.decode(GenerateMacInput.self, from: $0) }),
        ("GenerateRandom", { _ = try AWSJSON.decode(GenerateRandomRequest.self, from: $0) }),
        ("GetKeyLastUsage", { _ = try AWSJSON.decode(KeyIDRequest.self, from: $0) }),
        ("GetKeyPolicy", { _ = try AWSJSON.decode(GetKeyPolicyInput.self, from: $0) }),
        ("GetKeyRotationStatus", { _ = try AWSJSON.decode(KeyIDRequest.self, from: $0) }),
        ("GetParametersForImport", { _ = try AWSJSON.decode(GetParametersForImportRequest.self, from: $0) }),
        ("GetPublicKey", { _ = try AWSJSON.decode(GetPublicKeyRequest.self, from: $0) }),
        ("ImportKeyMaterial", { _ = try AWSJSON.decode(ImportKeyMaterialRequest.self, from: $0) }),
        ("ListAliases", { _ = try AWSJSON.decode(ListAliasesRequest.self, from: $0) }),
        ("ListGrants", { _ = try AWSJSON.decode(ListGrantsInput.self, from: $0) }),
        ("ListKeyPolicies", { _ = try AWSJSON.decode(ListKeyPoliciesInput.self, from: $0) }),
        ("ListKeyRotations", { _ = try AWSJSON.decode(ListKeyRotationsInput.self, from: $0) }),
        ("ListKeys", { _ = try AWSJSON.decode(ListKeysRequest.self, from: $0) }),
        ("ListResourceTags", { _ = try AWSJSON.decode(ListResourceTagsRequest.self, from: $0) }),
        ("ListRetirableGrants", { _ = try AWSJSON.decode(ListRetirableGrantsInput.self, from: $0) }),
        ("PutKeyPolicy", { _ = try AWSJSON.decode(PutKeyPolicyInput.self, from: $0) }),
        ("ReEncrypt", { _ = try AWSJSON.decode(ReEncryptRequest.self, from: $0) }),
        ("RetireGrant", { _ = try AWSJSON.decode(RetireGrantInput.self, from: $0) }),
        ("RevokeGrant", { _ = try AWSJSON.decode(RevokeGrantInput.self, from: $0) }),
        ("RotateKeyOnDemand", { _ = try AWSJSON.decode(KeyIDRequest.self, from: $0) }),
        ("ScheduleKeyDeletion", { _ = try AWSJSON.decode(ScheduleKeyDeletionRequest.self, from: $0) }),
        ("Sign", { _ = try AWSJSON.decode(SignRequest.self, from: $0) }),
        ("TagResource", { _ = try AWSJSON.decode(TagResourceRequest.self, from: $0) }),
        ("UntagResource", { _ = try AWSJSON.decode(UntagResourceRequest.self, from: $0) }),
        ("UpdateAlias", { _ = try AWSJSON.decode(AliasRequest.self, from: $0) }),
        ("UpdateCustomKeyStore", { _ = try AWSJSON.decode(UpdateCustomKeyStoreInput.self, from: $0) }),
        ("UpdateKeyDescription", { _ = try AWSJSON.decode(UpdateKeyDescriptionRequest.self, from: $0) }),
        ("Verify", { _ = try AWSJSON.decode(VerifyRequest.self, from: $0) }),
        ("VerifyMac", { _ = try AWSJSON.decode(VerifyMacInput.self, from: $0) }),
    ]
}
