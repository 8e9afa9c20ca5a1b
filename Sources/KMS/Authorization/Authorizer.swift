import Foundation
import Synchronization

/// One authorization question: may the caller perform `action`, on `key` or on the account?
struct AuthorizationRequest: Sendable {
    /// As policies name it, such as `kms:Decrypt`.
    var action: String
    /// Nil for account-level actions (CreateKey, ListKeys, ListAliases, GenerateRandom, ...), which only
    /// identity policies can allow.
    var key: KeyRecord?
    /// The grant operation that would allow the same thing, if any.
    var grantOperation: GrantOperation?
    /// The request's encryption context, for `kms:EncryptionContext:` keys and grant constraints.
    var encryptionContext: EncryptionContext?
    /// The alias the request named the key by (`kms:RequestAlias`).
    var requestAlias: String?
    /// Operation-specific condition keys (`kms:GrantOperations`, `aws:RequestTag/...`, ...).
    var context = ConditionContext()

    init(
        _ action: String, key: KeyRecord? = nil, grantOperation: GrantOperation? = nil, encryptionContext: EncryptionContext? = nil,
        requestAlias: String? = nil, context: ConditionContext = ConditionContext()
    ) {
        self.action = action
        self.key = key
        self.grantOperation = grantOperation
        self.encryptionContext = encryptionContext
        self.requestAlias = requestAlias
        self.context = context
    }
}

/// Decides every request as KMS does: an explicit Deny in the key policy or an identity policy wins; otherwise
/// the key policy must allow the caller directly, or allow the caller's account and an identity policy of the
/// caller allow too (the default key policy delegates to IAM this way), or a grant must allow the operation.
/// A caller from another account needs both the key policy and its own identity policy.
struct Authorizer: Sendable {
    let store: any MetadataStore
    let clock: any KMSClock

    func authorize(_ request: AuthorizationRequest, caller: Caller) async throws {
        if let key = request.key { AuditResources.current?.add(arn: key.arn, accountID: key.accountID) }
        let outcome = try await evaluate(request, caller: caller, keyPolicy: nil)
        switch outcome {
        case .allowed:
            // The request's quota class is that of the first key the caller may use (RequestQuotas.swift).
            if let key = request.key { try QuotaGate.current?.allowed(key) }
            return
        case .denied(let reason), .explicitlyDenied(let reason):
            let resource = request.key.map(\.arn) ?? "*"
            throw KMSError(
                .accessDenied,
                "User: \(caller.principalARN) is not authorized to perform: \(request.action) on resource: \(resource) \(reason)")
        }
    }

    enum Outcome: Equatable {
        case allowed
        /// No policy or grant allows it.
        case denied(String)
        /// A Deny statement matched: nothing, not even a grant, can allow it.
        case explicitlyDenied(String)
    }

    /// Evaluates `request`, optionally as if the key had `keyPolicy` (the lockout safety check of PutKeyPolicy).
    func evaluate(_ request: AuthorizationRequest, caller: Caller, keyPolicy: PolicyDocument?, includeGrants: Bool = true) async throws -> Outcome {
        let policyRequest = PolicyRequest(
            action: request.action, resource: request.key.map(\.arn) ?? "*", principalARN: caller.principalARN,
            principalAccount: caller.accountID.isEmpty ? nil : caller.accountID,
            context: try await conditionContext(for: request, caller: caller))

        let identityDecisions = try await identityPolicies(of: caller).map { $0.evaluate(policyRequest, as: .identity) }
        let identityAllows = identityDecisions.contains { $0.allowsPrincipal }

        guard let key = request.key else {
            if identityDecisions.contains(where: \.explicitDeny) {
                return .explicitlyDenied("with an explicit deny in an identity-based policy")
            }
            return identityAllows ? .allowed : .denied("because no identity-based policy allows the \(request.action) action")
        }

        let document = keyPolicy ?? ParsedPolicies.shared.document(key.policy)
        let keyDecision = document?.evaluate(policyRequest, as: .resource)
        if keyDecision?.explicitDeny == true {
            return .explicitlyDenied("with an explicit deny in a resource-based policy")
        }
        if identityDecisions.contains(where: \.explicitDeny) {
            return .explicitlyDenied("with an explicit deny in an identity-based policy")
        }
        let keyAllowsCaller = keyDecision?.allowsPrincipal ?? false
        let keyDelegatesToAccount = keyDecision?.allowedAccounts.contains(caller.accountID) ?? false
        let allowed: Bool
        if caller.principalKind == .service {
            // A service calling as itself has no account and no identity policies: the key policy decides.
            allowed = keyAllowsCaller
        } else if caller.accountID == key.accountID {
            allowed = keyAllowsCaller || (keyDelegatesToAccount && identityAllows)
        } else {
            allowed = (keyAllowsCaller || keyDelegatesToAccount) && identityAllows
        }
        if allowed { return .allowed }
        if includeGrants, let operation = request.grantOperation,
            try await grantAllows(operation, on: key, caller: caller, context: request.encryptionContext ?? EncryptionContext())
        {
            return .allowed
        }
        if keyAllowsCaller || keyDelegatesToAccount {
            return .denied("because no identity-based policy allows the \(request.action) action")
        }
        return .denied("because no resource-based policy allows the \(request.action) action")
    }

    func grantAllows(_ operation: GrantOperation, on key: KeyRecord, caller: Caller, context: EncryptionContext) async throws -> Bool {
        try await store.grants(of: key.id).contains { $0.allows(operation, for: caller.principalARN, context: context) }
    }

    private func identityPolicies(of caller: Caller) async throws -> [PolicyDocument] {
        guard caller.principalKind != .service else { return [] }
        return try await store.identityPolicies(of: caller.principalARN).compactMap { ParsedPolicies.shared.document($0.document) }
    }

    /// The global and KMS condition keys of a request.
    private func conditionContext(for request: AuthorizationRequest, caller: Caller) async throws -> ConditionContext {
        var context = request.context
        context.set("aws:PrincipalArn", caller.principalARN)
        let now = clock.now()
        context.set("aws:CurrentTime", ISO8601Seconds.string(now))
        context.set("aws:EpochTime", String(Int(now.timeIntervalSince1970)))
        if !caller.accountID.isEmpty {
            context.set("kms:CallerAccount", caller.accountID)
            context.set("aws:PrincipalAccount", caller.accountID)
        }
        if let service = caller.viaService { context.set("kms:ViaService", service) }
        if let sourceIP = caller.sourceIP { context.set("aws:SourceIp", sourceIP) }
        if caller.principalKind != .service, let principal = try await store.principal(caller.principalARN) {
            for tag in principal.tags { context.set("aws:PrincipalTag/\(tag.key)", tag.value) }
        }
        if let key = request.key {
            context.set("kms:KeySpec", key.keySpec.rawValue)
            context.set("kms:KeyUsage", key.keyUsage.rawValue)
            context.set("kms:KeyOrigin", key.origin.rawValue)
            context.set("kms:MultiRegion", key.isMultiRegion ? "true" : "false")
            if let type = key.multiRegionKeyType { context.set("kms:MultiRegionKeyType", type.rawValue) }
            for tag in try await store.tags(of: key.id) { context.set("aws:ResourceTag/\(tag.key)", tag.value) }
            context.set("kms:ResourceAliases", values: try await store.aliases(of: key.id).map(\.name))
        }
        if let alias = request.requestAlias { context.set("kms:RequestAlias", alias) }
        if let encryptionContext = request.encryptionContext {
            for (key, value) in encryptionContext.pairs { context.set("kms:EncryptionContext:\(key)", value) }
            context.set("kms:EncryptionContextKeys", values: encryptionContext.pairs.keys.sorted())
        }
        return context
    }
}

extension KMSError.Code {
    public static let accessDenied = KMSError.Code(rawValue: "AccessDeniedException")
}

/// Parsed policy documents by their text. A policy's meaning depends only on its text, so a document parsed
/// once serves every later request that names the same text (every key with the default policy of an account
/// shares one entry); a changed policy is a different text and is parsed afresh. Bounded: emptied when full.
final class ParsedPolicies: Sendable {
    static let shared = ParsedPolicies(capacity: 4_096)

    private let documents: Mutex<[String: PolicyDocument?]> = Mutex([:])
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    /// The parsed document, or nil when the text is not a valid policy (as `try? PolicyDocument(parsing:)`).
    func document(_ text: String) -> PolicyDocument? {
        if let known = documents.withLock({ $0[text] }) { return known }
        let parsed = try? PolicyDocument(parsing: text)
        documents.withLock { cache in
            if cache.count >= capacity { cache.removeAll() }
            cache[text] = parsed
        }
        return parsed
    }
}
