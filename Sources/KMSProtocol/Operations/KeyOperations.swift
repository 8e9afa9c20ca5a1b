import Foundation
import KMS

/// The wire form of a key's metadata (`KeyMetadata`).
struct WireKeyMetadata: Encodable, Sendable {
    var AWSAccountId: String
    var KeyId: String
    var Arn: String
    var CreationDate: Date
    var Enabled: Bool
    var Description: String
    var KeyUsage: String
    var KeyState: String
    var DeletionDate: Date?
    var Origin: String
    var KeyManager: String
    var CustomerMasterKeySpec: String
    var KeySpec: String
    var EncryptionAlgorithms: [String]?
    var MacAlgorithms: [String]?
    var SigningAlgorithms: [String]?
    var KeyAgreementAlgorithms: [String]?
    var ExpirationModel: String?
    var ValidTo: Date?
    var MultiRegion: Bool
    /// Symmetric encryption keys with material: the current backing-key version's key material id.
    var CurrentKeyMaterialId: String?
    var MultiRegionConfiguration: WireMultiRegionConfiguration?
    // Keys of custom key stores (CustomKeyStoreOperations.swift).
    var CustomKeyStoreId: String?
    var CloudHsmClusterId: String?
    var XksKeyConfiguration: WireXksKeyConfiguration?

    init(_ key: KeyRecord) {
        AWSAccountId = key.accountID
        KeyId = key.id.description
        Arn = key.arn
        CreationDate = key.creationDate
        Enabled = key.isEnabled
        Description = key.description
        KeyUsage = key.keyUsage.rawValue
        KeyState = key.state.rawValue
        DeletionDate = key.deletionDate
        Origin = key.origin.rawValue
        KeyManager = key.keyManager.rawValue
        CustomerMasterKeySpec = key.keySpec.rawValue
        KeySpec = key.keySpec.rawValue
        EncryptionAlgorithms = key.encryptionAlgorithms.isEmpty ? nil : key.encryptionAlgorithms
        MacAlgorithms = key.macAlgorithms.isEmpty ? nil : key.macAlgorithms
        SigningAlgorithms = key.signingAlgorithms.isEmpty ? nil : key.signingAlgorithms
        KeyAgreementAlgorithms = key.keyAgreementAlgorithms.isEmpty ? nil : key.keyAgreementAlgorithms
        ExpirationModel = key.expirationModel?.rawValue
        ValidTo = key.validTo
        MultiRegion = key.isMultiRegion
    }
}

/// `MultiRegionConfiguration` of a multi-Region key's metadata.
struct WireMultiRegionConfiguration: Encodable, Sendable {
    struct Key: Encodable, Sendable {
        var Arn: String
        var Region: String
    }
    var MultiRegionKeyType: String
    var PrimaryKey: Key?
    var ReplicaKeys: [Key]

    init(_ configuration: KeyManagementService.MultiRegionConfiguration) {
        MultiRegionKeyType = configuration.keyType.rawValue
        PrimaryKey = configuration.primaryKey.map { Key(Arn: $0.arn, Region: $0.region) }
        ReplicaKeys = configuration.replicaKeys.map { Key(Arn: $0.arn, Region: $0.region) }
    }
}

struct ReplicateKeyInput: Decodable, Sendable {
    var KeyId: String?
    var ReplicaRegion: String?
    var Policy: String?
    var BypassPolicyLockoutSafetyCheck: Bool?
    var Description: String?
    var Tags: [WireTag]?
}

struct UpdatePrimaryRegionInput: Decodable, Sendable {
    var KeyId: String?
    var PrimaryRegion: String?
}

struct ReplicateKeyResponse: Encodable, Sendable {
    var ReplicaKeyMetadata: WireKeyMetadata
    var ReplicaPolicy: String
    var ReplicaTags: [WireTag]
}

struct KeyMetadataResponse: Encodable, Sendable { var KeyMetadata: WireKeyMetadata }
struct KeyIDRequest: Decodable, Sendable {
    var KeyId: String?
    var GrantTokens: [String]?
}

struct CreateKeyInput: Decodable, Sendable {
    var Policy: String?
    var Description: String?
    var KeyUsage: String?
    var CustomerMasterKeySpec: String?
    var KeySpec: String?
    var Origin: String?
    var CustomKeyStoreId: String?
    var BypassPolicyLockoutSafetyCheck: Bool?
    var Tags: [WireTag]?
    var MultiRegion: Bool?
    var XksKeyId: String?
}

struct ListKeysRequest: Decodable, Sendable {
    var Limit: Int?
    var Marker: String?
}

struct ListKeysResponse: Encodable, Sendable {
    struct Entry: Encodable, Sendable {
        var KeyId: String
        var KeyArn: String
    }
    var Keys: [Entry]
    var NextMarker: String?
    var Truncated: Bool
}

struct UpdateKeyDescriptionRequest: Decodable, Sendable {
    var KeyId: String?
    var Description: String?
}

struct ScheduleKeyDeletionRequest: Decodable, Sendable {
    var KeyId: String?
    var PendingWindowInDays: Int?
}

struct ScheduleKeyDeletionResponse: Encodable, Sendable {
    var KeyId: String
    var DeletionDate: Date?
    var KeyState: String
    var PendingWindowInDays: Int?
}

struct CancelKeyDeletionResponse: Encodable, Sendable { var KeyId: String }

extension KeyManagementService {
    func keyOperations() -> [String: Operation] {
        return [
            "ReplicateKey": .json(ReplicateKeyInput.self) { request, caller in
                let (replica, tags) = try await self.replicateKey(
                    .init(
                        keyID: try required(request.KeyId, "KeyId"), replicaRegion: try required(request.ReplicaRegion, "ReplicaRegion"),
                        policy: request.Policy, bypassPolicyLockoutSafetyCheck: request.BypassPolicyLockoutSafetyCheck ?? false,
                        description: request.Description, tags: try (request.Tags ?? []).map { try $0.domain() }),
                    caller: caller)
                return ReplicateKeyResponse(
                    ReplicaKeyMetadata: try await self.wireKeyMetadata(replica), ReplicaPolicy: replica.policy,
                    ReplicaTags: tags.map(WireTag.init))
            },
            "UpdatePrimaryRegion": .json(UpdatePrimaryRegionInput.self) { request, caller in
                try await self.updatePrimaryRegion(
                    try required(request.KeyId, "KeyId"), primaryRegion: try required(request.PrimaryRegion, "PrimaryRegion"), caller: caller)
                return NoOutput()
            },
            "CreateKey": .json(CreateKeyInput.self) { request, caller in
                if let spec = request.KeySpec, let legacy = request.CustomerMasterKeySpec, spec != legacy {
                    throw KMSError(.validation, "You cannot specify KeySpec and CustomerMasterKeySpec in the same request.")
                }
                let key = try await self.createKey(
                    .init(
                        policy: request.Policy, description: request.Description, keyUsage: request.KeyUsage,
                        keySpec: request.KeySpec ?? request.CustomerMasterKeySpec, origin: request.Origin,
                        customKeyStoreID: request.CustomKeyStoreId, tags: try (request.Tags ?? []).map { try $0.domain() },
                        multiRegion: request.MultiRegion, xksKeyID: request.XksKeyId,
                        bypassPolicyLockoutSafetyCheck: request.BypassPolicyLockoutSafetyCheck ?? false),
                    caller: caller)
                return KeyMetadataResponse(KeyMetadata: try await self.wireKeyMetadata(key))
            },
            "DescribeKey": .json(KeyIDRequest.self) { request, caller in
                try self.validateGrantTokens(request.GrantTokens)
                let key = try await self.describeKey(try required(request.KeyId, "KeyId"), caller: caller)
                return KeyMetadataResponse(KeyMetadata: try await self.wireKeyMetadata(key))
            },
            "ListKeys": .json(ListKeysRequest.self) { request, caller in
                let page = try await self.listKeys(limit: request.Limit, marker: request.Marker, caller: caller)
                return ListKeysResponse(
                    Keys: page.items.map { .init(KeyId: $0.id.description, KeyArn: $0.arn) },
                    NextMarker: page.nextMarker, Truncated: page.nextMarker != nil)
            },
            "EnableKey": .json(KeyIDRequest.self) { request, caller in
                try await self.enableKey(try required(request.KeyId, "KeyId"), caller: caller)
                return NoOutput()
            },
            "DisableKey": .json(KeyIDRequest.self) { request, caller in
                try await self.disableKey(try required(request.KeyId, "KeyId"), caller: caller)
                return NoOutput()
            },
            "UpdateKeyDescription": .json(UpdateKeyDescriptionRequest.self) { request, caller in
                try await self.updateKeyDescription(
                    try required(request.KeyId, "KeyId"), description: try required(request.Description, "Description"),
                    caller: caller)
                return NoOutput()
            },
            "ScheduleKeyDeletion": .json(ScheduleKeyDeletionRequest.self) { request, caller in
                let key = try await self.scheduleKeyDeletion(
                    try required(request.KeyId, "KeyId"), pendingWindowInDays: request.PendingWindowInDays, caller: caller)
                return ScheduleKeyDeletionResponse(
                    KeyId: key.arn, DeletionDate: key.deletionDate, KeyState: key.state.rawValue,
                    PendingWindowInDays: key.pendingWindowInDays)
            },
            "CancelKeyDeletion": .json(KeyIDRequest.self) { request, caller in
                let key = try await self.cancelKeyDeletion(try required(request.KeyId, "KeyId"), caller: caller)
                return CancelKeyDeletionResponse(KeyId: key.arn)
            },
        ]
    }
}
