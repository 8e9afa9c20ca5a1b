import Foundation
import Logging

/// Grants: delegated permission to use one key for some operations, for one grantee, within constraints.
extension KeyManagementService {
    public struct CreateGrantRequest: Sendable {
        public var keyID: String
        public var granteePrincipal: String
        public var retiringPrincipal: String?
        public var operations: [String]
        public var constraints: GrantConstraints?
        public var name: String?
        public var grantTokens: [String]
        public var dryRun: Bool?

        public init(
            keyID: String, granteePrincipal: String, retiringPrincipal: String? = nil, operations: [String],
            constraints: GrantConstraints? = nil, name: String? = nil, grantTokens: [String] = [], dryRun: Bool? = nil
        ) {
            self.keyID = keyID
            self.granteePrincipal = granteePrincipal
            self.retiringPrincipal = retiringPrincipal
            self.operations = operations
            self.constraints = constraints
            self.name = name
            self.grantTokens = grantTokens
            self.dryRun = dryRun
        }
    }

    /// AWS's quota of grants per KMS key.
    static let maximumGrantsPerKey = 50_000

    public struct CreatedGrant: Sendable {
        public var grantID: String
        public var grantToken: String
    }

    public func createGrant(_ request: CreateGrantRequest, caller: Caller) async throws -> CreatedGrant {
        try validateLength(request.granteePrincipal.utf8.count, "granteePrincipal", min: 1, max: 256)
        if let retiring = request.retiringPrincipal { try validateLength(retiring.utf8.count, "retiringPrincipal", min: 1, max: 256) }
        guard !request.operations.isEmpty else { throw KMSError.constraint("operations", "Member must have length greater than or equal to 1") }
        let operations = try request.operations.map { text throws(KMSError) in try validateEnum(text, "operations", as: GrantOperation.self) }
        let constraints = request.constraints.flatMap { $0.isEmpty ? nil : $0 }
        if constraints?.encryptionContextEquals != nil, constraints?.encryptionContextSubset != nil {
            throw KMSError(.validation, "You can specify only one type of encryption context constraint: EncryptionContextEquals or EncryptionContextSubset.")
        }
        // Constraints are encryption contexts, with their bounds and AWS's own for grants (8 pairs, values of at most 384
        // characters): a grant cannot carry a megabyte of them.
        for pairs in [constraints?.encryptionContextEquals, constraints?.encryptionContextSubset].compactMap({ $0 }) {
            try EncryptionContext(pairs).validate(member: "constraints")
            guard pairs.count <= 8, pairs.values.allSatisfy({ $0.count <= 384 }) else {
                throw KMSError(.validation, "A grant constraint can have at most 8 encryption context pairs, each value at most 384 characters.")
            }
        }
        if constraints != nil, let unsupported = operations.first(where: { !$0.acceptsEncryptionContext }) {
            throw KMSError(.validation, "Grant constraints are not supported for the \(unsupported.rawValue) operation, which takes no encryption context.")
        }
        if let name = request.name { try validateGrantName(name) }
        try validateGrantTokens(request.grantTokens)

        let resolved = try await resolveKey(request.keyID, allowAlias: false, caller: caller)
        var conditions = ConditionContext()
        conditions.set("kms:GrantOperations", values: operations.map(\.rawValue))
        conditions.set("kms:GranteePrincipal", request.granteePrincipal)
        if let retiring = request.retiringPrincipal { conditions.set("kms:RetiringPrincipal", retiring) }
        conditions.set("kms:GrantIsForAWSResource", caller.viaService != nil ? "true" : "false")
        if constraints?.encryptionContextEquals != nil { conditions.set("kms:GrantConstraintType", "EncryptionContextEquals") }
        if constraints?.encryptionContextSubset != nil { conditions.set("kms:GrantConstraintType", "EncryptionContextSubset") }
        let outcome = try await authorizer.evaluate(
            AuthorizationRequest("kms:CreateGrant", key: resolved.record, requestAlias: resolved.requestAlias, context: conditions),
            caller: caller, keyPolicy: nil, includeGrants: false)
        if case .explicitlyDenied(let reason) = outcome {
            throw KMSError(
                .accessDenied,
                "User: \(caller.principalARN) is not authorized to perform: kms:CreateGrant on resource: \(arn(resolved.record)) \(reason)")
        }
        if case .denied(let reason) = outcome {
            // Through a grant: only one that allows CreateGrant, and only for a grant no wider than itself.
            let parents = try await store.grants(of: resolved.record.id).filter {
                $0.granteePrincipal == caller.principalARN && $0.operations.contains(.createGrant)
            }
            let narrower = parents.contains { parent in
                Set(operations).isSubset(of: parent.operations)
                    && (constraints ?? GrantConstraints()).isAtLeastAsStrict(as: parent.constraints ?? GrantConstraints())
            }
            guard narrower else {
                throw KMSError(
                    .accessDenied,
                    "User: \(caller.principalARN) is not authorized to perform: kms:CreateGrant on resource: \(arn(resolved.record)) \(reason)")
            }
        }
        let key = resolved.record
        try requireEnabled(key)
        try rejectDryRun(request.dryRun)

        let sortedOperations = Array(Set(operations)).sorted()
        if let name = request.name,
            let existing = try await store.grants(of: key.id).first(where: {
                $0.name == name && $0.granteePrincipal == request.granteePrincipal && $0.retiringPrincipal == request.retiringPrincipal
                    && $0.operations == sortedOperations && $0.constraints == constraints
            })
        {
            return CreatedGrant(grantID: existing.id, grantToken: try await Self.grantToken(for: existing.id, provider: provider))
        }
        guard try await store.grants(of: key.id).count < Self.maximumGrantsPerKey else {
            throw KMSError(.limitExceeded, "The grants quota of \(Self.maximumGrantsPerKey) per KMS key is reached for \(arn(key)).")
        }
        let grant = GrantRecord(
            id: try await provider.generateRandom(count: 32).hexString, keyID: key.id, name: request.name,
            granteePrincipal: request.granteePrincipal, retiringPrincipal: request.retiringPrincipal, operations: sortedOperations,
            constraints: constraints, issuingAccount: caller.accountID.isEmpty ? caller.principalARN : "arn:aws:iam::\(caller.accountID):root",
            creationDate: clock.now())
        try await store.insertGrant(grant)
        logger.info("created grant", metadata: ["kms.key.id": "\(key.id)", "kms.grant.id": "\(grant.id)"])
        return CreatedGrant(grantID: grant.id, grantToken: try await Self.grantToken(for: grant.id, provider: provider))
    }

    public func listGrants(
        keyID: String, grantID: String?, granteePrincipal: String?, limit: Int?, marker: String?, caller: Caller
    ) async throws -> Page<GrantRecord> {
        let limit = limit ?? 50
        try validateRange(limit, "limit", min: 1, max: 100)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:ListGrants", resolved, caller: caller)
        let grants = try await store.grants(of: resolved.record.id).filter {
            (grantID == nil || $0.id == grantID) && (granteePrincipal == nil || $0.granteePrincipal == granteePrincipal)
        }
        return try page(grants, limit: limit, marker: marker)
    }

    public func listRetirableGrants(retiringPrincipal: String, limit: Int?, marker: String?, caller: Caller) async throws -> Page<GrantRecord> {
        let limit = limit ?? 50
        try validateRange(limit, "limit", min: 1, max: 100)
        try validateLength(retiringPrincipal.utf8.count, "retiringPrincipal", min: 1, max: 256)
        try await authorizer.authorize(AuthorizationRequest("kms:ListRetirableGrants"), caller: caller)
        // As in AWS, the grants listed are those "in the caller's account": a caller of no account (a service as
        // itself) has none to list.
        guard !caller.accountID.isEmpty else {
            throw KMSError(
                .accessDenied,
                "User: \(caller.principalARN) is not authorized to perform: kms:ListRetirableGrants on resource: * because it belongs to no account")
        }
        // A principal of an account (an ARN, or an account id) must be of the caller's account; its grants are listed
        // on every key, other accounts' included (cross-account grants, as AWS documents). A principal of no account
        // (a service principal such as rds.us-east-1.amazonaws.com retires grants in many accounts) lists only the
        // grants on the caller's account's keys: a grant belongs to its key's account.
        let parts = retiringPrincipal.split(separator: ":", omittingEmptySubsequences: false)
        let principalAccount =
            parts.count >= 5 && parts[0] == "arn" ? String(parts[4]) : Account.isValidID(retiringPrincipal) ? retiringPrincipal : nil
        if let principalAccount, principalAccount != caller.accountID {
            throw KMSError(
                .accessDenied,
                "User: \(caller.principalARN) is not authorized to perform: kms:ListRetirableGrants for \(retiringPrincipal), a principal of another account")
        }
        let region = location.region(of: caller)
        var grants: [GrantRecord] = []
        // Grants are regional: only those on keys of the request's Region.
        for grant in try await store.grants(retirableBy: retiringPrincipal, keyAccount: principalAccount == nil ? caller.accountID : nil)
        where try await store.key(grant.keyID)?.region == region {
            grants.append(grant)
        }
        return try page(grants, limit: limit, marker: marker)
    }

    /// Retires a grant named by its token, or by key and grant id. The retiring principal may retire it, and so
    /// may the grantee when the grant allows RetireGrant, and anyone the key's policies allow kms:RetireGrant.
    public func retireGrant(grantToken: String?, keyID: String?, grantID: String?, caller: Caller) async throws {
        let grant: GrantRecord
        if let grantToken {
            let id = try Self.grantID(fromToken: grantToken)
            guard let found = try await store.grant(id) else { throw KMSError(.notFound, "Grant not found.") }
            grant = found
        } else {
            guard let keyID, let grantID else {
                throw KMSError(.validation, "Specify a GrantToken, or both a KeyId and a GrantId.")
            }
            let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
            guard let found = try await store.grant(grantID), found.keyID == resolved.record.id else {
                throw KMSError(.notFound, "Grant \(grantID) does not exist on \(arn(resolved.record)).")
            }
            grant = found
        }
        let mayRetire =
            grant.retiringPrincipal == caller.principalARN
            || (grant.granteePrincipal == caller.principalARN && grant.operations.contains(.retireGrant))
        if !mayRetire {
            guard let key = try await store.key(grant.keyID) else { throw KMSError(.notFound, "Grant not found.") }
            try await authorize("kms:RetireGrant", ResolvedKey(record: key, requestAlias: nil), caller: caller)
        }
        try await store.deleteGrant(grant.id)
    }

    public func revokeGrant(keyID: String, grantID: String, dryRun: Bool?, caller: Caller) async throws {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:RevokeGrant", resolved, caller: caller)
        guard let grant = try await store.grant(grantID), grant.keyID == resolved.record.id else {
            throw KMSError(.notFound, "Grant \(grantID) does not exist on \(arn(resolved.record)).")
        }
        try rejectDryRun(dryRun)
        try await store.deleteGrant(grant.id)
    }

    // MARK: Grant tokens

    private static let grantTokenPrefix = "trent-grant-token-v1:"

    /// A grant token names its grant; grants take effect at once in Trent, so a token needs no waiting.
    static func grantToken(for grantID: String, provider: any KeyProvider) async throws -> String {
        let nonce = try await provider.generateRandom(count: 16).hexString
        return Data((grantTokenPrefix + grantID + ":" + nonce).utf8).base64EncodedString()
    }

    static func grantID(fromToken token: String) throws(KMSError) -> String {
        guard let data = Data(base64Encoded: token), let text = String(data: data, encoding: .utf8), text.hasPrefix(grantTokenPrefix) else {
            throw KMSError(.invalidGrantToken, "The grant token is not valid.")
        }
        let parts = text.dropFirst(grantTokenPrefix.count).split(separator: ":")
        // Lowercase ASCII hex, as grant ids are written: Character.isHexDigit also takes fullwidth digits and letters.
        guard parts.count == 2, parts[0].utf8.count == 64,
            parts[0].utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        else {
            throw KMSError(.invalidGrantToken, "The grant token is not valid.")
        }
        return String(parts[0])
    }

    /// Every operation that takes GrantTokens checks them: up to 10, each one a token Trent issued.
    public func validateGrantTokens(_ tokens: [String]?) throws(KMSError) {
        guard let tokens else { return }
        guard tokens.count <= 10 else { throw KMSError.constraint("grantTokens", "Member must have length less than or equal to 10") }
        for token in tokens {
            try validateLength(token.utf8.count, "grantTokens.member", min: 1, max: 8192)
            _ = try Self.grantID(fromToken: token)
        }
    }

    private func validateGrantName(_ name: String) throws(KMSError) {
        try validateLength(name.utf8.count, "name", min: 1, max: 256)
        guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ":/_-".contains($0)) }) else {
            throw KMSError.constraint("name", "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$", value: name)
        }
    }

    private func page(_ grants: [GrantRecord], limit: Int, marker: String?) throws -> Page<GrantRecord> {
        var start = 0
        if let marker {
            guard let index = grants.firstIndex(where: { $0.id == marker }) else {
                throw KMSError(.invalidMarker, "The marker '\(marker)' is not valid.")
            }
            start = index + 1
        }
        let items = Array(grants[start...].prefix(limit))
        return Page(items: items, nextMarker: start + items.count < grants.count ? items.last?.id : nil)
    }
}

extension KeyManagementService {
    /// The ARN of a grant's key (for grant listings), in the key's account and Region.
    public func keyARN(of keyID: KeyID) async throws -> String {
        try await store.key(keyID)?.arn ?? ServiceLocation.keyARN(keyID, account: location.accountID, region: location.region)
    }
}
