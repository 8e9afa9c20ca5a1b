public import Foundation
import Logging

/// Multi-Region keys: related keys in several Regions with one id (`mrk-…`) and one copy of key material. Each
/// related key has its own policy, aliases, grants, tags, description and enabled state; the material, its
/// versions and their nonce counts are kept once, under the key it was made for (``KeyRecord/materialOwner``), so
/// a ciphertext made with one decrypts with any other.
extension KeyManagementService {
    /// Where a multi-Region key and its related keys are, as DescribeKey shows it.
    public struct MultiRegionConfiguration: Sendable, Equatable {
        public struct Location: Sendable, Equatable {
            public var arn: String
            public var region: String
        }
        public var keyType: MultiRegionKeyType
        public var primaryKey: Location?
        /// Every replica, in the order they were made.
        public var replicaKeys: [Location]
    }

    public struct ReplicateKeyRequest: Sendable {
        public var keyID: String
        public var replicaRegion: String
        public var policy: String?
        public var bypassPolicyLockoutSafetyCheck: Bool
        public var description: String?
        public var tags: [Tag]

        public init(
            keyID: String, replicaRegion: String, policy: String? = nil, bypassPolicyLockoutSafetyCheck: Bool = false,
            description: String? = nil, tags: [Tag] = []
        ) {
            self.keyID = keyID
            self.replicaRegion = replicaRegion
            self.policy = policy
            self.bypassPolicyLockoutSafetyCheck = bypassPolicyLockoutSafetyCheck
            self.description = description
            self.tags = tags
        }
    }

    /// The configuration of a multi-Region key; nil for a single-Region key.
    public func multiRegionConfiguration(of key: KeyRecord) async throws -> MultiRegionConfiguration? {
        guard let keyType = key.multiRegionKeyType else { return nil }
        let related = try await store.relatedKeys(of: key.materialOwner)
        let locations = { (keys: [KeyRecord]) in keys.map { MultiRegionConfiguration.Location(arn: $0.arn, region: $0.region) } }
        return MultiRegionConfiguration(
            keyType: keyType, primaryKey: locations(related.filter { $0.multiRegionKeyType == .primary }).first,
            replicaKeys: locations(related.filter { $0.multiRegionKeyType == .replica }))
    }

    /// Makes a replica of a multi-Region primary key in another Region: the same id and material, with its own
    /// policy (the default one unless given), description and tags. Called in the primary key's Region.
    public func replicateKey(_ request: ReplicateKeyRequest, caller: Caller) async throws -> (key: KeyRecord, tags: [Tag]) {
        try validateLength(request.replicaRegion.utf8.count, "replicaRegion", min: 1, max: 32)
        let description = request.description ?? ""
        try validateLength(description.utf8.count, "description", min: 0, max: 8192)
        try validateTags(request.tags)
        guard location.regions.contains(request.replicaRegion) else {
            throw KMSError(.validation, "The replica Region \(request.replicaRegion) is not a Region this service serves.")
        }
        let resolved = try await resolveKey(request.keyID, allowAlias: false, caller: caller)
        var replication = ConditionContext()
        replication.set("kms:ReplicaRegion", request.replicaRegion)
        try await authorize("kms:ReplicateKey", resolved, context: replication, caller: caller)
        // The replica is created in its own Region, by the same caller.
        var replicaCaller = caller
        replicaCaller.region = request.replicaRegion
        var conditions = ConditionContext()
        conditions.addRequestTags(request.tags)
        conditions.set("kms:MultiRegion", "true")
        conditions.set("kms:MultiRegionKeyType", MultiRegionKeyType.replica.rawValue)
        try await authorizer.authorize(AuthorizationRequest("kms:CreateKey", context: conditions), caller: replicaCaller)

        let primary = resolved.record
        guard primary.isMultiRegion else {
            throw KMSError(.unsupportedOperation, "\(arn(primary)) is not a multi-Region key.")
        }
        guard primary.multiRegionKeyType == .primary else {
            throw KMSError(.unsupportedOperation, "\(arn(primary)) is not a multi-Region primary key.")
        }
        guard primary.origin == .awsKMS else {
            throw KMSError(.unsupportedOperation, "Trent replicates multi-Region keys of origin AWS_KMS only, not \(primary.origin.rawValue).")
        }
        try requireNotPendingDeletion(primary)
        let related = try await store.relatedKeys(of: primary.materialOwner)
        if let existing = related.first(where: { $0.region == request.replicaRegion }) {
            throw KMSError(.alreadyExists, "\(arn(existing)) already exists in \(request.replicaRegion).")
        }
        var replica = KeyRecord(
            id: KeyID(multiRegion: primary.id.uuid, region: request.replicaRegion), accountID: primary.accountID,
            region: request.replicaRegion, creationDate: clock.now(), description: description, keySpec: primary.keySpec,
            keyUsage: primary.keyUsage, origin: primary.origin, keyManager: primary.keyManager, state: .enabled,
            policy: Self.defaultKeyPolicy(account: primary.accountID), currentVersion: primary.currentVersion,
            materialOwner: primary.materialOwner, multiRegionKeyType: .replica)
        if let policy = request.policy {
            replica.policy = try await checkedKeyPolicy(
                policy, for: replica, bypassLockoutCheck: request.bypassPolicyLockoutSafetyCheck, caller: replicaCaller)
        }
        do {
            try await store.insertKey(replica, backingKey: nil, tags: request.tags)
        } catch MetadataStoreError.duplicate {
            throw KMSError(.alreadyExists, "\(arn(replica)) already exists in \(request.replicaRegion).")
        }
        logger.info("replicated key", metadata: ["kms.key.id": "\(replica.id)", "kms.replica.region": "\(request.replicaRegion)"])
        return (replica, request.tags)
    }

    /// Makes the related key in `primaryRegion` the primary key and this one, the primary, a replica. Both must be
    /// Enabled, and both keys' policies must allow it, as in AWS. Automatic rotation moves with the role.
    public func updatePrimaryRegion(_ keyID: String, primaryRegion: String, caller: Caller) async throws {
        try validateLength(primaryRegion.utf8.count, "primaryRegion", min: 1, max: 32)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        var update = ConditionContext()
        update.set("kms:PrimaryRegion", primaryRegion)
        try await authorize("kms:UpdatePrimaryRegion", resolved, context: update, caller: caller)
        let primary = resolved.record
        guard primary.isMultiRegion else {
            throw KMSError(.unsupportedOperation, "\(arn(primary)) is not a multi-Region key.")
        }
        guard primary.multiRegionKeyType == .primary else {
            throw KMSError(.unsupportedOperation, "\(arn(primary)) is not a multi-Region primary key.")
        }
        guard primaryRegion != primary.region else {
            throw KMSError(.validation, "\(arn(primary)) is already the primary key in \(primaryRegion).")
        }
        guard let replica = try await store.relatedKeys(of: primary.materialOwner).first(where: { $0.region == primaryRegion }) else {
            throw KMSError(
                .notFound, "Key '\(ServiceLocation.keyARN(primary.id, account: primary.accountID, region: primaryRegion))' does not exist")
        }
        var replicaCaller = caller
        replicaCaller.region = primaryRegion
        try await authorize("kms:UpdatePrimaryRegion", ResolvedKey(record: replica, requestAlias: nil), context: update, caller: replicaCaller)
        for key in [primary, replica] where key.state != .enabled {
            throw KMSError(.invalidState, "\(arn(key)) is \(key.state.rawValue); updating the primary Region needs both keys Enabled.")
        }
        guard try await store.updatePrimary(from: primary.id, to: replica.id) else {
            throw KMSError(.invalidState, "\(arn(primary)) or \(arn(replica)) changed while the primary Region was being updated; try again.")
        }
        logger.info("updated primary Region", metadata: ["kms.key.id": "\(primary.id)", "kms.primary.region": "\(primaryRegion)"])
    }

    /// A replica's rotation is its primary key's: the schedule (shown by GetKeyRotationStatus) lives on the primary.
    func primaryKey(of key: KeyRecord) async throws -> KeyRecord? {
        guard key.multiRegionKeyType == .replica else { return key }
        return try await store.relatedKeys(of: key.materialOwner).first { $0.multiRegionKeyType == .primary }
    }
}
