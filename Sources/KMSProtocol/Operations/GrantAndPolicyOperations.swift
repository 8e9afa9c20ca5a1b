import Foundation
import KMS

struct WireGrantConstraints: Codable, Sendable {
    var EncryptionContextSubset: [String: String]?
    var EncryptionContextEquals: [String: String]?

    init(_ constraints: GrantConstraints) {
        EncryptionContextSubset = constraints.encryptionContextSubset
        EncryptionContextEquals = constraints.encryptionContextEquals
    }

    var domain: GrantConstraints {
        GrantConstraints(encryptionContextEquals: EncryptionContextEquals, encryptionContextSubset: EncryptionContextSubset)
    }
}

struct CreateGrantInput: Decodable, Sendable {
    var KeyId: String?
    var GranteePrincipal: String?
    var RetiringPrincipal: String?
    var Operations: [String]?
    var Constraints: WireGrantConstraints?
    var GrantTokens: [String]?
    var Name: String?
    var DryRun: Bool?
}

struct CreateGrantOutput: Encodable, Sendable {
    var GrantToken: String
    var GrantId: String
}

struct WireGrant: Encodable, Sendable {
    var KeyId: String
    var GrantId: String
    var Name: String?
    var CreationDate: Date
    var GranteePrincipal: String
    var RetiringPrincipal: String?
    var IssuingAccount: String
    var Operations: [String]
    var Constraints: WireGrantConstraints?

    init(_ grant: GrantRecord, keyARN: String) {
        KeyId = keyARN
        GrantId = grant.id
        Name = grant.name
        CreationDate = grant.creationDate
        GranteePrincipal = grant.granteePrincipal
        RetiringPrincipal = grant.retiringPrincipal
        IssuingAccount = grant.issuingAccount
        Operations = grant.operations.map(\.rawValue)
        Constraints = grant.constraints.map(WireGrantConstraints.init)
    }
}

struct ListGrantsInput: Decodable, Sendable {
    var KeyId: String?
    var Limit: Int?
    var Marker: String?
    var GrantId: String?
    var GranteePrincipal: String?
}

struct ListRetirableGrantsInput: Decodable, Sendable {
    var RetiringPrincipal: String?
    var Limit: Int?
    var Marker: String?
}

struct ListGrantsOutput: Encodable, Sendable {
    var Grants: [WireGrant]
    var NextMarker: String?
    var Truncated: Bool
}

struct RetireGrantInput: Decodable, Sendable {
    var GrantToken: String?
    var KeyId: String?
    var GrantId: String?
    var DryRun: Bool?
}

struct RevokeGrantInput: Decodable, Sendable {
    var KeyId: String?
    var GrantId: String?
    var DryRun: Bool?
}

struct GetKeyPolicyInput: Decodable, Sendable {
    var KeyId: String?
    var PolicyName: String?
}

struct GetKeyPolicyOutput: Encodable, Sendable {
    var Policy: String
    var PolicyName: String
}

struct PutKeyPolicyInput: Decodable, Sendable {
    var KeyId: String?
    var PolicyName: String?
    var Policy: String?
    var BypassPolicyLockoutSafetyCheck: Bool?
}

struct ListKeyPoliciesInput: Decodable, Sendable {
    var KeyId: String?
    var Limit: Int?
    var Marker: String?
}

struct ListKeyPoliciesOutput: Encodable, Sendable {
    var PolicyNames: [String]
    var Truncated: Bool
}

extension KeyManagementService {
    func grantAndPolicyOperations() -> [String: Operation] {
        @Sendable func wireGrants(_ page: Page<GrantRecord>) async throws -> ListGrantsOutput {
            var grants: [WireGrant] = []
            for grant in page.items {
                grants.append(WireGrant(grant, keyARN: try await self.keyARN(of: grant.keyID)))
            }
            return ListGrantsOutput(Grants: grants, NextMarker: page.nextMarker, Truncated: page.nextMarker != nil)
        }
        return [
            "CreateGrant": .json(CreateGrantInput.self) { request, caller in
                let created = try await self.createGrant(
                    .init(
                        keyID: try required(request.KeyId, "KeyId"), granteePrincipal: try required(request.GranteePrincipal, "GranteePrincipal"),
                        retiringPrincipal: request.RetiringPrincipal, operations: try required(request.Operations, "Operations"),
                        constraints: request.Constraints?.domain, name: request.Name, grantTokens: request.GrantTokens ?? [],
                        dryRun: request.DryRun),
                    caller: caller)
                return CreateGrantOutput(GrantToken: created.grantToken, GrantId: created.grantID)
            },
            "ListGrants": .json(ListGrantsInput.self) { request, caller in
                try await wireGrants(
                    try await self.listGrants(
                        keyID: try required(request.KeyId, "KeyId"), grantID: request.GrantId, granteePrincipal: request.GranteePrincipal,
                        limit: request.Limit, marker: request.Marker, caller: caller))
            },
            "ListRetirableGrants": .json(ListRetirableGrantsInput.self) { request, caller in
                try await wireGrants(
                    try await self.listRetirableGrants(
                        retiringPrincipal: try required(request.RetiringPrincipal, "RetiringPrincipal"), limit: request.Limit,
                        marker: request.Marker, caller: caller))
            },
            "RetireGrant": .json(RetireGrantInput.self) { request, caller in
                try self.rejectDryRun(request.DryRun)
                try await self.retireGrant(grantToken: request.GrantToken, keyID: request.KeyId, grantID: request.GrantId, caller: caller)
                return NoOutput()
            },
            "RevokeGrant": .json(RevokeGrantInput.self) { request, caller in
                try await self.revokeGrant(
                    keyID: try required(request.KeyId, "KeyId"), grantID: try required(request.GrantId, "GrantId"), dryRun: request.DryRun,
                    caller: caller)
                return NoOutput()
            },
            "GetKeyPolicy": .json(GetKeyPolicyInput.self) { request, caller in
                let (policy, name) = try await self.getKeyPolicy(try required(request.KeyId, "KeyId"), policyName: request.PolicyName, caller: caller)
                return GetKeyPolicyOutput(Policy: policy, PolicyName: name)
            },
            "PutKeyPolicy": .json(PutKeyPolicyInput.self) { request, caller in
                try await self.putKeyPolicy(
                    try required(request.KeyId, "KeyId"), policy: try required(request.Policy, "Policy"), policyName: request.PolicyName,
                    bypassLockoutCheck: request.BypassPolicyLockoutSafetyCheck ?? false, caller: caller)
                return NoOutput()
            },
            "ListKeyPolicies": .json(ListKeyPoliciesInput.self) { request, caller in
                let names = try await self.listKeyPolicies(try required(request.KeyId, "KeyId"), limit: request.Limit, caller: caller)
                return ListKeyPoliciesOutput(PolicyNames: names, Truncated: false)
            },
        ]
    }
}
