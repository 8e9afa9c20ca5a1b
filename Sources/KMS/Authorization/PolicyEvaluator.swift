/// One request, as the policy language sees it.
public struct PolicyRequest: Sendable {
    /// e.g. "kms:Decrypt"; matched case-insensitively against Action/NotAction, with `*` and `?` wildcards.
    public var action: String
    /// e.g. "arn:aws:kms:us-east-1:111122223333:key/<uuid>"; "*" in a policy matches anything.
    public var resource: String
    /// "arn:aws:iam::111122223333:user/alice", ".../role/x", or a service principal such as "rds.us-east-1.amazonaws.com".
    public var principalARN: String
    /// "111122223333"; nil for service principals.
    public var principalAccount: String?
    public var context: ConditionContext

    public init(action: String, resource: String, principalARN: String, principalAccount: String?, context: ConditionContext) {
        self.action = action
        self.resource = resource
        self.principalARN = principalARN
        self.principalAccount = principalAccount
        self.context = context
    }
}

/// What one policy says about one request. The caller combines the decisions of the key policy, identity
/// policies and grants: an explicit deny anywhere wins; otherwise the key policy must allow the principal, or
/// allow its account and an identity policy of that account allow the principal.
public struct PolicyDecision: Sendable, Equatable {
    /// A matching Deny statement.
    public var explicitDeny: Bool
    /// A matching Allow statement that names this principal exactly, or "*" / {"AWS": "*"} (resource policies),
    /// or any matching Allow (identity policies).
    public var allowsPrincipal: Bool
    /// Accounts named by matching Allow statements as an account ("111122223333" or "arn:aws:iam::111122223333:root"),
    /// and only those equal to request.principalAccount: the key policy delegates to that account's identity policies.
    public var allowedAccounts: Set<String>
    /// The Sids (or "statement N", 1-based) of every matching statement, in document order, for diagnostics.
    public var matchedStatements: [String]

    public init(explicitDeny: Bool = false, allowsPrincipal: Bool = false, allowedAccounts: Set<String> = [], matchedStatements: [String] = []) {
        self.explicitDeny = explicitDeny
        self.allowsPrincipal = allowsPrincipal
        self.allowedAccounts = allowedAccounts
        self.matchedStatements = matchedStatements
    }
}

extension PolicyDocument {
    /// Evaluates this document for one request.
    ///
    /// A statement matches when its principal (resource policies), action, resource and every condition match.
    /// A statement the kind forbids — no principal in a key policy, a principal in an identity policy — never
    /// matches; `init(parsing:as:)` refuses such documents before they are stored.
    public func evaluate(_ request: PolicyRequest, as kind: PolicyKind) -> PolicyDecision {
        var decision = PolicyDecision()
        for (offset, statement) in statements.enumerated() {
            guard let principal = statement.principalMatch(for: request, as: kind),
                statement.matchesAction(request.action),
                statement.matchesResource(request.resource),
                statement.conditions.allSatisfy({ $0.isSatisfied(by: request.context) })
            else { continue }
            decision.matchedStatements.append(statement.sid ?? "statement \(offset + 1)")
            switch statement.effect {
            case .deny:
                decision.explicitDeny = true
            case .allow:
                if principal.isExact { decision.allowsPrincipal = true }
                decision.allowedAccounts.formUnion(principal.accounts)
            }
        }
        return decision
    }
}

/// How a statement's principal element applies to the caller.
private struct PrincipalMatch {
    /// The statement names the caller itself (or everyone).
    var isExact: Bool
    /// The caller's account, when the statement names that account.
    var accounts: Set<String>
}

extension PolicyStatement {
    /// Nil when the statement does not apply to the caller.
    fileprivate func principalMatch(for request: PolicyRequest, as kind: PolicyKind) -> PrincipalMatch? {
        switch (kind, principal) {
        case (.identity, nil):
            return PrincipalMatch(isExact: true, accounts: [])
        case (.identity, _?), (.resource, nil):
            return nil
        case (.resource, .including(let principals)?):
            let isExact = principals.contains { $0.namesExactly(request) }
            let accounts = Set(principals.compactMap { $0.delegatedAccount(for: request) })
            return isExact || !accounts.isEmpty ? PrincipalMatch(isExact: isExact, accounts: accounts) : nil
        case (.resource, .excluding(let principals)?):
            // NotPrincipal: everyone not listed. A listed account exempts only the account's root user, as IAM
            // documents: `NotPrincipal: [user/Bob, <account root>]` with Deny denies every principal but Bob.
            let isListed = principals.contains { principal in
                if case .anyone = principal { return true }
                return principal.namesExactly(request)
            }
            return isListed ? nil : PrincipalMatch(isExact: true, accounts: [])
        }
    }

    fileprivate func matchesAction(_ requested: String) -> Bool {
        let requested = requested.lowercased()
        return Self.scope(action, matches: requested) { globMatches(pattern: $0.lowercased(), $1) }
    }

    fileprivate func matchesResource(_ requested: String) -> Bool {
        Self.scope(resource, matches: requested) { globMatches(pattern: $0, $1) }
    }

    /// `including`: some pattern matches; `excluding`: none does.
    private static func scope(_ scope: StatementScope<String>, matches value: String, by matches: (String, String) -> Bool) -> Bool {
        switch scope {
        case .including(let patterns): patterns.contains { matches($0, value) }
        case .excluding(let patterns): !patterns.contains { matches($0, value) }
        }
    }
}

extension PolicyPrincipal {
    /// Names the caller itself: everyone, its exact ARN, its service name, or — for the account root user —
    /// its account.
    fileprivate func namesExactly(_ request: PolicyRequest) -> Bool {
        switch self {
        case .anyone: true
        case .arn(let arn): arn == request.principalARN
        case .service(let name): name == request.principalARN
        case .account(let account): ARNParts(request.principalARN).map { $0.service == "iam" && $0.account == account && $0.resource == "root" } ?? false
        case .federated, .canonicalUser: false
        }
    }

    /// The caller's account, when this principal is that account.
    fileprivate func delegatedAccount(for request: PolicyRequest) -> String? {
        guard case .account(let account) = self, account == request.principalAccount else { return nil }
        return account
    }
}
