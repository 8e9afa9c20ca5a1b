public import Foundation
import Logging

/// Creating keys and moving them through their lifecycle.
extension KeyManagementService {
    /// The key specs whose material can be imported (Origin EXTERNAL): symmetric, HMAC, RSA and ECC keys, as in AWS.
    static let importableSpecs: Set<KeySpec> = [
        .symmetricDefault, .hmac224, .hmac256, .hmac384, .hmac512, .rsa2048, .rsa3072, .rsa4096, .eccNistP256, .eccNistP384, .eccNistP521,
        .eccSecgP256k1,
    ]

    public struct CreateKeyRequest: Sendable {
        public var policy: String?
        public var description: String?
        public var keyUsage: String?
        public var keySpec: String?
        public var origin: String?
        public var customKeyStoreID: String?
        public var tags: [Tag]
        public var multiRegion: Bool?
        public var xksKeyID: String?
        public var bypassPolicyLockoutSafetyCheck: Bool

        public init(
            policy: String? = nil, description: String? = nil, keyUsage: String? = nil, keySpec: String? = nil,
            origin: String? = nil, customKeyStoreID: String? = nil, tags: [Tag] = [], multiRegion: Bool? = nil,
            xksKeyID: String? = nil, bypassPolicyLockoutSafetyCheck: Bool = false
        ) {
            self.bypassPolicyLockoutSafetyCheck = bypassPolicyLockoutSafetyCheck
            self.policy = policy
            self.description = description
            self.keyUsage = keyUsage
            self.keySpec = keySpec
            self.origin = origin
            self.customKeyStoreID = customKeyStoreID
            self.tags = tags
            self.multiRegion = multiRegion
            self.xksKeyID = xksKeyID
        }
    }

    public func createKey(_ request: CreateKeyRequest, caller: Caller) async throws -> KeyRecord {
        let keySpec = try request.keySpec.map { text throws(KMSError) in try validateEnum(text, "keySpec", as: KeySpec.self) } ?? .symmetricDefault
        let keyUsage = try request.keyUsage.map { text throws(KMSError) in try validateEnum(text, "keyUsage", as: KeyUsage.self) } ?? .encryptDecrypt
        let origin = try request.origin.map { text throws(KMSError) in try validateEnum(text, "origin", as: KeyOrigin.self) } ?? .awsKMS
        let description = request.description ?? ""
        try validateLength(description.utf8.count, "description", min: 0, max: 8192)

        guard keySpec.backingKeyKind != nil else {
            throw KMSError(
                .unsupportedOperation,
                provider.unavailability(of: keySpec) ?? "KeySpec \(keySpec.rawValue) is not supported by Trent: it has no SM2 or ML-DSA keys.")
        }
        if request.keyUsage == nil && keySpec != .symmetricDefault {
            throw KMSError(.validation, "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.")
        }
        guard keySpec.keyUsages.contains(keyUsage) else {
            throw KMSError(.validation, "KeyUsage \(keyUsage.rawValue) is not compatible with KeySpec \(keySpec.rawValue)")
        }
        if origin == .external, !Self.importableSpecs.contains(keySpec) {
            throw KMSError(.unsupportedOperation, "Trent imports no key material into \(keySpec.rawValue) keys.")
        }
        try validateTags(request.tags)
        var conditions = ConditionContext()
        conditions.set("kms:KeySpec", keySpec.rawValue)
        conditions.set("kms:KeyUsage", keyUsage.rawValue)
        conditions.set("kms:KeyOrigin", origin.rawValue)
        conditions.set("kms:MultiRegion", request.multiRegion == true ? "true" : "false")
        if request.multiRegion == true { conditions.set("kms:MultiRegionKeyType", MultiRegionKeyType.primary.rawValue) }
        conditions.addRequestTags(request.tags)
        try await authorizer.authorize(AuthorizationRequest("kms:CreateKey", context: conditions), caller: caller)
        guard !caller.accountID.isEmpty else {
            throw KMSError(.accessDenied, "User: \(caller.principalARN) is not authorized to perform: kms:CreateKey on resource: * because it belongs to no account")
        }
        // Custom key stores (KeyManagementService+CustomKeyStores.swift) are looked up only for an authorized caller:
        // whether a store exists, is connected or holds an XksKeyId is nobody else's business.
        let placement = try await customKeyStorePlacement(
            storeID: request.customKeyStoreID, xksKeyID: request.xksKeyID, origin: origin, keySpec: keySpec,
            multiRegion: request.multiRegion, caller: caller)
        if origin == .awsCloudHSM || origin == .externalKeyStore, placement == nil {
            throw KMSError(.validation, "Origin \(origin.rawValue) needs a CustomKeyStoreId.")
        }

        let region = location.region(of: caller)
        let multiRegion = request.multiRegion == true
        let id = multiRegion ? KeyID(multiRegion: UUID(), region: region) : KeyID()
        var key = KeyRecord(
            id: id, accountID: caller.accountID, region: region, creationDate: clock.now(), description: description, keySpec: keySpec,
            keyUsage: keyUsage, origin: origin, keyManager: .customer, state: origin == .external ? .pendingImport : .enabled,
            policy: Self.defaultKeyPolicy(account: caller.accountID), currentVersion: 1, multiRegionKeyType: multiRegion ? .primary : nil)
        if let policy = request.policy {
            key.policy = try await checkedKeyPolicy(policy, for: key, bypassLockoutCheck: request.bypassPolicyLockoutSafetyCheck, caller: caller)
        }
        if let placement {
            try await insertNewKey(key, tags: request.tags, in: placement)
        } else {
            try await insertNewKey(key, tags: request.tags)
        }
        logger.info("created key", metadata: ["kms.key.id": "\(id)", "kms.caller": "\(caller.principalARN)"])
        return key
    }

    /// Generates the first backing key in the token and stores the key with it; a key of origin EXTERNAL is
    /// stored without one, waiting for ImportKeyMaterial.
    func insertNewKey(_ key: KeyRecord, tags: [Tag]) async throws {
        if key.origin == .external {
            try await store.insertKey(key, backingKey: nil, tags: tags)
            return
        }
        guard let kind = key.keySpec.backingKeyKind else {
            throw KMSError(.unsupportedOperation, "KeySpec \(key.keySpec.rawValue) is not supported by Trent yet.")
        }
        let material = try await provider.createBackingKey(for: key.id, version: 1, kind: kind)
        let backingKey = BackingKeyRecord(
            keyID: key.id, version: 1, wrappedKey: material.wrappedKey, binding: material.binding,
            wrappingKeyLabel: material.wrappingKeyLabel, creationDate: key.creationDate, publicKey: material.publicKey)
        try await store.insertKey(key, backingKey: backingKey, tags: tags)
    }

    /// The policy AWS gives a key created without one: the account root may do everything, which delegates
    /// access to the account's identity policies.
    public static func defaultKeyPolicy(account: String) -> String {
        """
        {"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions",\
        "Effect":"Allow","Principal":{"AWS":"arn:aws:iam::\(account):root"},"Action":"kms:*","Resource":"*"}]}
        """
    }

    /// When the last replica of a primary key in PendingReplicaDeletion is gone, the primary's own waiting period
    /// starts. `related` are the destroyed key's related keys as they were before.
    private func startPrimaryDeletion(after destroyed: KeyRecord, related: [KeyRecord]) async throws {
        guard destroyed.multiRegionKeyType == .replica, let named = related.first(where: { $0.multiRegionKeyType == .primary }),
            let primary = try await store.key(named.id), primary.state == .pendingReplicaDeletion, let days = primary.pendingWindowInDays,
            try await !store.relatedKeys(of: primary.materialOwner).contains(where: { $0.multiRegionKeyType == .replica })
        else { return }
        _ = try await store.updateKey(
            primary.id, .deletionScheduled(date: clock.now().addingTimeInterval(TimeInterval(days) * 86_400), pendingWindowInDays: days),
            if: .state(in: [.pendingReplicaDeletion]))
        logger.info("scheduled key deletion after its replicas'", metadata: ["kms.key.id": "\(primary.id)", "kms.deletion.days": "\(days)"])
    }

    public func describeKey(_ keyID: String, caller: Caller) async throws -> KeyRecord {
        let resolved = try await resolveKey(keyID, allowAlias: true, caller: caller)
        try await authorize("kms:DescribeKey", resolved, grant: .describeKey, caller: caller)
        return resolved.record
    }

    public func listKeys(limit: Int?, marker: String?, caller: Caller) async throws -> Page<KeyRecord> {
        let limit = limit ?? 100
        try validateRange(limit, "limit", min: 1, max: 1000)
        if let marker { try validateLength(marker.utf8.count, "marker", min: 1, max: 1024) }
        try await authorizer.authorize(AuthorizationRequest("kms:ListKeys"), caller: caller)
        do {
            return try await store.listKeys(account: caller.accountID, region: location.region(of: caller), after: marker, limit: limit)
        } catch MetadataStoreError.invalidMarker {
            throw KMSError(.invalidMarker, "The marker '\(marker ?? "")' is not valid.")
        }
    }

    public func enableKey(_ keyID: String, caller: Caller) async throws {
        try await setState(.enabled, of: keyID, action: "kms:EnableKey", caller: caller)
    }

    public func disableKey(_ keyID: String, caller: Caller) async throws {
        try await setState(.disabled, of: keyID, action: "kms:DisableKey", caller: caller)
    }

    /// Enabling and disabling apply only between those two states (not to keys pending deletion or import).
    private func setState(_ state: KeyState, of keyID: String, action: String, caller: Caller) async throws {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize(action, resolved, caller: caller)
        let check = { (key: KeyRecord) throws(KMSError) in
            try self.requireNotPendingDeletion(key)
            guard key.state == .enabled || key.state == .disabled else {
                throw KMSError(.invalidState, "\(self.arn(key)) is \(key.state.rawValue).")
            }
        }
        try check(resolved.record)
        _ = try await update(resolved.record, .state(state), if: .state(in: [.enabled, .disabled]), check: check)
    }

    public func updateKeyDescription(_ keyID: String, description: String, caller: Caller) async throws {
        try validateLength(description.utf8.count, "description", min: 0, max: 8192)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:UpdateKeyDescription", resolved, caller: caller)
        try requireNotPendingDeletion(resolved.record)
        _ = try await update(resolved.record, .description(description), if: .notPendingDeletion, check: requireNotPendingDeletion)
    }

    /// Schedules destruction after a waiting period of 7 to 30 days (default 30); the key is unusable meanwhile.
    public func scheduleKeyDeletion(_ keyID: String, pendingWindowInDays: Int?, caller: Caller) async throws -> KeyRecord {
        let days = pendingWindowInDays ?? 30
        try validateRange(days, "pendingWindowInDays", min: 1, max: 365)
        guard (7...30).contains(days) else {
            throw KMSError(.validation, "PendingWindowInDays must be between 7 and 30 days, not \(days).")
        }
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:ScheduleKeyDeletion", resolved, caller: caller)
        try requireNotPendingDeletion(resolved.record)
        // A multi-Region primary key outlives its replicas, as in AWS: its waiting period starts after theirs.
        if resolved.record.multiRegionKeyType == .primary,
            try await store.relatedKeys(of: resolved.record.materialOwner).contains(where: { $0.multiRegionKeyType == .replica })
        {
            let key = try await update(
                resolved.record, .replicaDeletionScheduled(pendingWindowInDays: days), if: .notPendingDeletion, check: requireNotPendingDeletion)
            logger.info("scheduled key deletion after its replicas'", metadata: ["kms.key.id": "\(key.id)", "kms.deletion.days": "\(days)"])
            return key
        }
        let key = try await update(
            resolved.record, .deletionScheduled(date: clock.now().addingTimeInterval(TimeInterval(days) * 86_400), pendingWindowInDays: days),
            if: .notPendingDeletion, check: requireNotPendingDeletion)
        logger.info("scheduled key deletion", metadata: ["kms.key.id": "\(key.id)", "kms.deletion.days": "\(days)"])
        return key
    }

    /// Cancels a scheduled deletion; the key comes back disabled, as in AWS (or PendingImport when it has no
    /// imported material).
    public func cancelKeyDeletion(_ keyID: String, caller: Caller) async throws -> KeyRecord {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:CancelKeyDeletion", resolved, caller: caller)
        let check = { (key: KeyRecord) throws(KMSError) in
            guard key.state == .pendingDeletion || key.state == .pendingReplicaDeletion else {
                throw KMSError(.invalidState, "\(self.arn(key)) is not pending deletion.")
            }
        }
        try check(resolved.record)
        return try await update(resolved.record, .deletionCancelled, if: .state(in: [.pendingDeletion, .pendingReplicaDeletion]), check: check)
    }

    /// Destroys every key whose deletion date has passed: its metadata, wrapped backing keys, aliases and
    /// tags leave the store, and the provider drops its working copies. Returns the destroyed ids.
    @discardableResult
    public func destroyExpiredKeys() async throws -> [KeyID] {
        let due = try await store.keysPendingDeletion(dueBy: clock.now())
        for key in due {
            await releaseCustomKeyStoreObject(of: key)
            let related = key.isMultiRegion ? try await store.relatedKeys(of: key.materialOwner).filter { $0.id != key.id } : []
            try await store.destroyKey(key.id)
            await provider.forget(key.id)
            ledger.forget(key.id)
            usage.forget(key.id)
            logger.info("destroyed key at the end of its deletion window", metadata: ["kms.key.id": "\(key.id)"])
            try await startPrimaryDeletion(after: key, related: related)
        }
        return due.map(\.id)
    }
}
