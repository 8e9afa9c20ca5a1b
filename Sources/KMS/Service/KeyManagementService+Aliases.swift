public import Foundation

/// Friendly names for keys.
extension KeyManagementService {
    static let reservedAliasPrefix = "alias/aws/"

    private func validateAliasName(_ name: String) throws(KMSError) {
        try validateLength(name.utf8.count, "aliasName", min: 1, max: 256)
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || ":/_-".unicodeScalars.contains(scalar))
        }
        guard allowed else {
            throw KMSError.constraint("aliasName", "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$", value: name)
        }
        guard name.hasPrefix("alias/"), name.count > "alias/".count else {
            throw KMSError(.validation, "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html")
        }
        guard !name.hasPrefix(Self.reservedAliasPrefix) else {
            throw KMSError(.notAuthorized, "Alias names beginning with \(Self.reservedAliasPrefix) are reserved for AWS managed keys.")
        }
    }

    /// An alias names a key, never another alias: AWS answers an alias name or alias ARN as the target with a
    /// ValidationException, where the other operations that take only keys answer NotFoundException.
    private func rejectAliasAsTarget(_ targetKeyID: String) throws(KMSError) {
        if targetKeyID.hasPrefix("alias/") || (targetKeyID.hasPrefix("arn:") && targetKeyID.contains(":alias/")) {
            throw KMSError(.validation, "Aliases must refer to keys. Not aliases")
        }
    }

    public func createAlias(_ name: String, targetKeyID: String, caller: Caller) async throws {
        try validateAliasName(name)
        // The model's pattern admits ':', but an alias name holds only letters, digits, '/', '_' and '-' (AWS's
        // developer guide). Checked at creation only, so an alias an older Trent made stays updatable and deletable.
        guard !name.dropFirst("alias/".count).contains(":") else {
            throw KMSError(.validation, "\(name) contains invalid characters for an alias")
        }
        try rejectAliasAsTarget(targetKeyID)
        let target = try await resolveKey(targetKeyID, member: "targetKeyId", allowAlias: false, caller: caller)
        try requireOwnAccount(target.record, caller: caller)
        try await authorize("kms:CreateAlias", target, caller: caller)
        try requireNotPendingDeletion(target.record)
        let now = clock.now()
        do {
            try await store.insertAlias(
                AliasRecord(
                    name: name, accountID: caller.accountID, region: target.record.region, targetKeyID: target.record.id,
                    creationDate: now, lastUpdatedDate: now))
        } catch MetadataStoreError.duplicate {
            throw KMSError(.alreadyExists, "An alias with the name \(aliasARN(name, caller: caller)) already exists")
        }
    }

    /// Points an existing alias at another key; the caller needs kms:UpdateAlias on both keys.
    public func updateAlias(_ name: String, targetKeyID: String, caller: Caller) async throws {
        try validateAliasName(name)
        guard var alias = try await store.alias(named: name, account: caller.accountID, region: location.region(of: caller)) else {
            throw KMSError(.notFound, "Alias \(aliasARN(name, caller: caller)) is not found.")
        }
        try rejectAliasAsTarget(targetKeyID)
        let target = try await resolveKey(targetKeyID, member: "targetKeyId", allowAlias: false, caller: caller)
        try requireOwnAccount(target.record, caller: caller)
        if let current = try await store.key(alias.targetKeyID) {
            try await authorize("kms:UpdateAlias", ResolvedKey(record: current, requestAlias: name), caller: caller)
        }
        try await authorize("kms:UpdateAlias", target, caller: caller)
        try requireNotPendingDeletion(target.record)
        alias.targetKeyID = target.record.id
        alias.lastUpdatedDate = clock.now()
        try await store.updateAlias(alias)
    }

    public func deleteAlias(_ name: String, caller: Caller) async throws {
        try validateAliasName(name)
        let region = location.region(of: caller)
        guard let alias = try await store.alias(named: name, account: caller.accountID, region: region) else {
            throw KMSError(.notFound, "Alias \(aliasARN(name, caller: caller)) is not found.")
        }
        if let key = try await store.key(alias.targetKeyID) {
            try await authorize("kms:DeleteAlias", ResolvedKey(record: key, requestAlias: name), caller: caller)
        }
        try await store.deleteAlias(named: name, account: caller.accountID, region: region)
    }

    public func listAliases(keyID: String?, limit: Int?, marker: String?, caller: Caller) async throws -> Page<AliasRecord> {
        let limit = limit ?? 50
        try validateRange(limit, "limit", min: 1, max: 100)
        if let marker { try validateLength(marker.utf8.count, "marker", min: 1, max: 1024) }
        try await authorizer.authorize(AuthorizationRequest("kms:ListAliases"), caller: caller)
        let target = try await keyID.asyncMap { try await resolveKey($0, allowAlias: false, caller: caller).record }
        // Aliases live in an account: another account's aliases are never listed, even for a key shared with the caller.
        if let target, target.accountID != caller.accountID { return Page(items: [], nextMarker: nil) }
        do {
            return try await store.listAliases(
                account: target?.accountID ?? caller.accountID, region: location.region(of: caller), for: target?.id, after: marker, limit: limit)
        } catch MetadataStoreError.invalidMarker {
            throw KMSError(.invalidMarker, "The marker '\(marker ?? "")' is not valid.")
        }
    }

    /// An alias of the caller's account in the caller's Region.
    private func aliasARN(_ name: String, caller: Caller) -> String {
        ServiceLocation.aliasARN(name, account: caller.accountID, region: location.region(of: caller))
    }

    /// Aliases live in the key's account: another account's key cannot be named by one.
    private func requireOwnAccount(_ key: KeyRecord, caller: Caller) throws(KMSError) {
        guard key.accountID == caller.accountID else {
            throw KMSError(.notFound, "Key '\(arn(key))' does not exist")
        }
    }
}

/// Tags on keys.
extension KeyManagementService {
    static let maximumTagsPerKey = 50

    func validateTags(_ tags: [Tag]) throws(KMSError) {
        // AWS names a member of the list by its 1-based position: 'tags.1.member.tagValue'.
        for (position, tag) in zip(1..., tags) {
            try validateTagKey(tag.key, member: "tags.\(position).member.tagKey")
            try validateLength(tag.value.utf8.count, "tags.\(position).member.tagValue", min: 0, max: 256, value: tag.value)
        }
        guard Set(tags.map(\.key)).count == tags.count else {
            throw KMSError(.tag, "Duplicate tag keys")
        }
        guard tags.count <= Self.maximumTagsPerKey else {
            throw KMSError(.tag, "Too many tags")
        }
    }

    private func validateTagKey(_ key: String, member: String) throws(KMSError) {
        try validateLength(key.utf8.count, member, min: 1, max: 128, value: key)
        if key.lowercased().hasPrefix("aws:") {
            throw KMSError(.tag, "Tags beginning with aws: are reserved")
        }
    }

    public func tagResource(_ keyID: String, tags: [Tag], caller: Caller) async throws {
        try validateTags(tags)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        var conditions = ConditionContext()
        conditions.addRequestTags(tags)
        try await authorize("kms:TagResource", resolved, context: conditions, caller: caller)
        let key = resolved.record
        try requireNotPendingDeletion(key)
        let existing = try await store.tags(of: key.id)
        let resulting = Set(existing.map(\.key)).union(tags.map(\.key))
        guard resulting.count <= Self.maximumTagsPerKey else {
            throw KMSError(.limitExceeded, "A key can have at most \(Self.maximumTagsPerKey) tags.")
        }
        try await store.putTags(tags, on: key.id)
    }

    public func untagResource(_ keyID: String, tagKeys: [String], caller: Caller) async throws {
        for (position, tagKey) in zip(1..., tagKeys) { try validateTagKey(tagKey, member: "tagKeys.\(position).member") }
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        var conditions = ConditionContext()
        conditions.set("aws:TagKeys", values: tagKeys)
        try await authorize("kms:UntagResource", resolved, context: conditions, caller: caller)
        let key = resolved.record
        try requireNotPendingDeletion(key)
        try await store.removeTags(tagKeys, from: key.id)
    }

    /// Tags sorted by key, paged by an opaque marker (the last key returned).
    public func listResourceTags(_ keyID: String, limit: Int?, marker: String?, caller: Caller) async throws -> Page<Tag> {
        let limit = limit ?? 50
        try validateRange(limit, "limit", min: 1, max: 50)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:ListResourceTags", resolved, caller: caller)
        let key = resolved.record
        let tags = try await store.tags(of: key.id).sorted { $0.key < $1.key }
        var start = 0
        if let marker {
            guard let decoded = Data(base64Encoded: marker).flatMap({ String(data: $0, encoding: .utf8) }) else {
                throw KMSError(.invalidMarker, "The marker '\(marker)' is not valid.")
            }
            start = tags.firstIndex { $0.key > decoded } ?? tags.count
        }
        let page = Array(tags[start...].prefix(limit))
        let more = start + page.count < tags.count
        let next = more ? page.last.map { Data($0.key.utf8).base64EncodedString() } : nil
        return Page(items: page, nextMarker: next)
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
