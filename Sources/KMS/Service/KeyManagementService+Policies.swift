import Foundation
import Logging

/// Authorization helpers, key policies, and the AWS managed keys of integrated services.
extension KeyManagementService {
    /// Authorizes `action` on a resolved key, with the condition keys every key operation carries.
    func authorize(
        _ action: String, _ key: ResolvedKey, grant: GrantOperation? = nil, encryptionContext: EncryptionContext? = nil,
        context: ConditionContext = ConditionContext(), caller: Caller
    ) async throws {
        try await authorizer.authorize(
            AuthorizationRequest(
                action, key: key.record, grantOperation: grant, encryptionContext: encryptionContext, requestAlias: key.requestAlias,
                context: context),
            caller: caller)
    }

    public static let defaultPolicyName = "default"

    public func getKeyPolicy(_ keyID: String, policyName: String?, caller: Caller) async throws -> (policy: String, name: String) {
        let name = try validatePolicyName(policyName)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:GetKeyPolicy", resolved, caller: caller)
        return (resolved.record.policy, name)
    }

    public func listKeyPolicies(_ keyID: String, limit: Int?, caller: Caller) async throws -> [String] {
        try validateRange(limit ?? 100, "limit", min: 1, max: 1000)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:ListKeyPolicies", resolved, caller: caller)
        return [Self.defaultPolicyName]
    }

    public func putKeyPolicy(_ keyID: String, policy: String, policyName: String?, bypassLockoutCheck: Bool, caller: Caller) async throws {
        _ = try validatePolicyName(policyName)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:PutKeyPolicy", resolved, caller: caller)
        try requireNotPendingDeletion(resolved.record)
        let text = try await checkedKeyPolicy(policy, for: resolved.record, bypassLockoutCheck: bypassLockoutCheck, caller: caller)
        _ = try await update(resolved.record, .policy(text), if: .notPendingDeletion, check: requireNotPendingDeletion)
    }

    private func validatePolicyName(_ name: String?) throws(KMSError) -> String {
        let name = name ?? Self.defaultPolicyName
        try validateLength(name.utf8.count, "policyName", min: 1, max: 128)
        guard name == Self.defaultPolicyName else {
            throw KMSError(.notFound, "No such policy exists: \(name). The only key policy is \"default\".")
        }
        return name
    }

    /// AWS's quota on a key policy's length, in characters (a longer one is LimitExceededException, not a
    /// validation error). Even with every character escaped as `\u00XX` it fits the default 1 MiB request body.
    static let maximumKeyPolicyLength = 131_072

    /// Parses a new key policy and, unless bypassed, refuses one that would lock the caller out: the caller
    /// must still be allowed to change the policy afterwards, as AWS's policy lockout safety check requires.
    func checkedKeyPolicy(_ text: String, for key: KeyRecord, bypassLockoutCheck: Bool, caller: Caller) async throws -> String {
        let length = text.unicodeScalars.count
        if length == 0 { throw KMSError.constraint("policy", "Member must have length greater than or equal to 1") }
        guard length <= Self.maximumKeyPolicyLength else {
            throw KMSError(
                .limitExceeded,
                "The request was rejected because a length constraint or quota was exceeded: a key policy has at most \(Self.maximumKeyPolicyLength) characters.")
        }
        let document: PolicyDocument
        do {
            document = try PolicyDocument(parsing: text, as: .resource)
        } catch {
            throw KMSError(.malformedPolicyDocument, "The key policy is not valid: \(error.message)")
        }
        if !bypassLockoutCheck {
            var future = key
            future.policy = text
            let outcome = try await authorizer.evaluate(
                AuthorizationRequest("kms:PutKeyPolicy", key: future), caller: caller, keyPolicy: document, includeGrants: false)
            guard outcome == .allowed else {
                throw KMSError(
                    .malformedPolicyDocument,
                    "The new key policy will not allow you to update the key policy in the future.")
            }
        }
        return text
    }

    // MARK: AWS managed keys

    static let awsManagedAliasPrefix = "alias/aws/"

    /// The AWS managed key `alias/aws/<service>` of an account, created the first time it is named, as AWS does,
    /// when `<service>` is an integrated service configured in Trent. Its policy lets principals of the account
    /// use it only through that service, and shows its metadata to the account; nobody can change it.
    func awsManagedKey(for aliasName: String, account: String, caller: Caller) async throws -> KeyRecord? {
        // Only an account's own principals bring its AWS managed keys into being.
        guard aliasName.hasPrefix(Self.awsManagedAliasPrefix), Account.isValidID(account), account == caller.accountID else { return nil }
        let service = String(aliasName.dropFirst(Self.awsManagedAliasPrefix.count))
        let region = location.region(of: caller)
        let servicePrincipal = "\(service).\(region).amazonaws.com"
        guard !service.isEmpty, try await store.principal(servicePrincipal)?.kind == .service,
            try await store.account(account) != nil
        else { return nil }

        let now = clock.now()
        let key = KeyRecord(
            id: KeyID(), accountID: account, region: region, creationDate: now,
            description: "Default key that protects my \(service.uppercased()) data when no other key is defined",
            keySpec: .symmetricDefault, keyUsage: .encryptDecrypt, origin: .awsKMS, keyManager: .aws, state: .enabled,
            policy: Self.awsManagedKeyPolicy(account: account, servicePrincipal: servicePrincipal, service: service), currentVersion: 1)
        try await insertNewKey(key, tags: [])
        do {
            try await store.insertAlias(AliasRecord(name: aliasName, accountID: account, region: region, targetKeyID: key.id, creationDate: now, lastUpdatedDate: now))
        } catch MetadataStoreError.duplicate {
            // Another request created it first: keep theirs.
            try await store.destroyKey(key.id)
            guard let alias = try await store.alias(named: aliasName, account: account, region: region) else { return nil }
            return try await store.key(alias.targetKeyID)
        }
        logger.info("created AWS managed key", metadata: ["kms.key.id": "\(key.id)", "kms.alias": "\(aliasName)", "kms.account": "\(account)"])
        return key
    }

    static func awsManagedKeyPolicy(account: String, servicePrincipal: String, service: String) -> String {
        """
        {"Version":"2012-10-17","Id":"auto-\(service)-2","Statement":[\
        {"Sid":"Allow access through \(service.uppercased()) for all principals in the account that are authorized to use \(service.uppercased())",\
        "Effect":"Allow","Principal":{"AWS":"*"},\
        "Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:CreateGrant","kms:ListGrants","kms:DescribeKey"],\
        "Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"\(account)","kms:ViaService":"\(servicePrincipal)"}}},\
        {"Sid":"Allow direct access to key metadata to the account","Effect":"Allow",\
        "Principal":{"AWS":"arn:aws:iam::\(account):root"},"Action":["kms:Describe*","kms:Get*","kms:List*","kms:RevokeGrant"],"Resource":"*"}]}
        """
    }
}

extension ConditionContext {
    /// `aws:RequestTag/<key>` for each tag and `aws:TagKeys` for all of them.
    mutating func addRequestTags(_ tags: [Tag]) {
        for tag in tags { set("aws:RequestTag/\(tag.key)", tag.value) }
        set("aws:TagKeys", values: tags.map(\.key))
    }
}
