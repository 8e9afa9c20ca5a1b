import KMS
import Testing

/// Statement matching: principal forms, NotPrincipal, actions and resources with their Not… forms, explicit
/// deny, and account delegation as opposed to naming the principal exactly.
@Suite struct PolicyEvaluationTests {
    /// A one-statement key policy for kms:Decrypt on every resource, with `principal` as its Principal member.
    func keyPolicy(_ principal: JSON, effect: String = "Allow", element principalElement: String = "Principal") throws -> PolicyDocument {
        try PolicyDocument(
            parsing: document([("Sid", "S"), ("Effect", .string(effect)), (principalElement, principal), ("Action", "kms:Decrypt"), ("Resource", "*")]),
            as: .resource)
    }

    static let allowed = PolicyDecision(allowsPrincipal: true, matchedStatements: ["S"])
    static let delegated = PolicyDecision(allowedAccounts: [Fixture.account], matchedStatements: ["S"])
    static let denied = PolicyDecision(explicitDeny: true, matchedStatements: ["S"])
    static let nothing = PolicyDecision()

    static let service = Fixture.request(principal: Fixture.rds, account: nil)
    static let outsider = Fixture.request(principal: Fixture.outsider, account: Fixture.otherAccount)

    @Test func everyone() throws {
        for principal: JSON in ["*", .object([("AWS", "*")]), .object([("AWS", ["*"])])] {
            let policy = try keyPolicy(principal)
            #expect(policy.evaluate(Fixture.request(), as: .resource) == Self.allowed)
            #expect(policy.evaluate(Self.outsider, as: .resource) == Self.allowed)
            #expect(policy.evaluate(Self.service, as: .resource) == Self.allowed)
        }
    }

    @Test func anAccountDelegatesToItsIdentityPolicies() throws {
        for principal: JSON in [.object([("AWS", "111122223333")]), .object([("AWS", "arn:aws:iam::111122223333:root")])] {
            let policy = try keyPolicy(principal)
            #expect(policy.evaluate(Fixture.request(), as: .resource) == Self.delegated)
            #expect(policy.evaluate(Fixture.request(principal: Fixture.role), as: .resource) == Self.delegated)
            #expect(policy.evaluate(Self.outsider, as: .resource) == Self.nothing)
            #expect(policy.evaluate(Self.service, as: .resource) == Self.nothing)
            // The account's root user is the account itself: named exactly, and still its account.
            #expect(
                policy.evaluate(Fixture.request(principal: Fixture.root), as: .resource)
                    == PolicyDecision(allowsPrincipal: true, allowedAccounts: [Fixture.account], matchedStatements: ["S"]))
        }
    }

    @Test func anExactPrincipal() throws {
        let policy = try keyPolicy(.object([("AWS", .string(Fixture.alice))]))
        #expect(policy.evaluate(Fixture.request(), as: .resource) == Self.allowed)
        #expect(policy.evaluate(Fixture.request(principal: Fixture.bob), as: .resource) == Self.nothing)
        #expect(policy.evaluate(Fixture.request(principal: "arn:aws:iam::111122223333:user/Alice"), as: .resource) == Self.nothing)
        #expect(policy.evaluate(Fixture.request(principal: Fixture.root), as: .resource) == Self.nothing)

        let rolePolicy = try keyPolicy(.object([("AWS", .string(Fixture.role))]))
        #expect(rolePolicy.evaluate(Fixture.request(principal: Fixture.role), as: .resource) == Self.allowed)
        #expect(rolePolicy.evaluate(Fixture.request(), as: .resource) == Self.nothing)
    }

    @Test func aServicePrincipal() throws {
        let policy = try keyPolicy(.object([("Service", "rds.amazonaws.com")]))
        #expect(policy.evaluate(Self.service, as: .resource) == Self.allowed)
        #expect(policy.evaluate(Fixture.request(), as: .resource) == Self.nothing)
        let regional = try keyPolicy(.object([("Service", ["rds.us-east-1.amazonaws.com"])]))
        #expect(regional.evaluate(Fixture.request(principal: "rds.us-east-1.amazonaws.com", account: nil), as: .resource) == Self.allowed)
        #expect(regional.evaluate(Self.service, as: .resource) == Self.nothing)
    }

    @Test func federatedAndCanonicalUserPrincipalsParseButNeverMatch() throws {
        let policy = try keyPolicy(.object([("Federated", "cognito-identity.amazonaws.com"), ("CanonicalUser", "79a59df900b949e5")]))
        #expect(policy.statements.first?.principal == .including([.federated("cognito-identity.amazonaws.com"), .canonicalUser("79a59df900b949e5")]))
        #expect(policy.evaluate(Fixture.request(principal: "cognito-identity.amazonaws.com", account: nil), as: .resource) == Self.nothing)
    }

    @Test func aListOfPrincipals() throws {
        let policy = try keyPolicy(.object([("AWS", [.string(Fixture.otherAccount), .string(Fixture.alice)]), ("Service", "rds.amazonaws.com")]))
        #expect(policy.evaluate(Fixture.request(), as: .resource) == Self.allowed)
        #expect(policy.evaluate(Self.service, as: .resource) == Self.allowed)
        #expect(policy.evaluate(Fixture.request(principal: Fixture.bob), as: .resource) == Self.nothing)
        #expect(
            policy.evaluate(Self.outsider, as: .resource)
                == PolicyDecision(allowedAccounts: [Fixture.otherAccount], matchedStatements: ["S"]))

        let both = try keyPolicy(.object([("AWS", [.string(Fixture.account), .string(Fixture.alice)])]))
        #expect(
            both.evaluate(Fixture.request(), as: .resource)
                == PolicyDecision(allowsPrincipal: true, allowedAccounts: [Fixture.account], matchedStatements: ["S"]))
        #expect(both.evaluate(Fixture.request(principal: Fixture.bob), as: .resource) == Self.delegated)
    }

    @Test func aDenyNamingAnAccountDeniesEveryPrincipalInIt() throws {
        let policy = try keyPolicy(.object([("AWS", "111122223333")]), effect: "Deny")
        #expect(policy.evaluate(Fixture.request(), as: .resource) == Self.denied)
        #expect(policy.evaluate(Fixture.request(principal: Fixture.role), as: .resource) == Self.denied)
        #expect(policy.evaluate(Fixture.request(principal: Fixture.root), as: .resource) == Self.denied)
        #expect(policy.evaluate(Self.outsider, as: .resource) == Self.nothing)
        #expect(policy.evaluate(Self.service, as: .resource) == Self.nothing)

        let exact = try keyPolicy(.object([("AWS", .string(Fixture.alice))]), effect: "Deny")
        #expect(exact.evaluate(Fixture.request(), as: .resource) == Self.denied)
        #expect(exact.evaluate(Fixture.request(principal: Fixture.bob), as: .resource) == Self.nothing)

        let everyone = try keyPolicy("*", effect: "Deny")
        #expect(everyone.evaluate(Self.service, as: .resource) == Self.denied)
    }

    @Test func notPrincipalAppliesToEveryoneUnlisted() throws {
        let allowAllButAlice = try keyPolicy(.object([("AWS", .string(Fixture.alice))]), element: "NotPrincipal")
        #expect(allowAllButAlice.evaluate(Fixture.request(), as: .resource) == Self.nothing)
        #expect(allowAllButAlice.evaluate(Fixture.request(principal: Fixture.bob), as: .resource) == Self.allowed)
        #expect(allowAllButAlice.evaluate(Self.service, as: .resource) == Self.allowed)

        // A listed account exempts only its root user (IAM's documented NotPrincipal pattern: listing
        // [user/Bob, account root] with Deny denies everyone but Bob).
        let denyAllButTheRoot = try keyPolicy(.object([("AWS", "arn:aws:iam::111122223333:root")]), effect: "Deny", element: "NotPrincipal")
        #expect(denyAllButTheRoot.evaluate(Fixture.request(), as: .resource) == Self.denied)
        #expect(denyAllButTheRoot.evaluate(Fixture.request(principal: Fixture.role), as: .resource) == Self.denied)
        #expect(denyAllButTheRoot.evaluate(Fixture.request(principal: "arn:aws:iam::111122223333:root"), as: .resource) == Self.nothing)
        #expect(denyAllButTheRoot.evaluate(Self.outsider, as: .resource) == Self.denied)
        #expect(denyAllButTheRoot.evaluate(Self.service, as: .resource) == Self.denied)

        let services = try keyPolicy(.object([("Service", "rds.amazonaws.com")]), effect: "Deny", element: "NotPrincipal")
        #expect(services.evaluate(Self.service, as: .resource) == Self.nothing)
        #expect(services.evaluate(Fixture.request(), as: .resource) == Self.denied)

        let nobody = try keyPolicy("*", element: "NotPrincipal")
        #expect(nobody.evaluate(Fixture.request(), as: .resource) == Self.nothing)
    }

    @Test func actionsMatchCaseInsensitivelyWithWildcards() throws {
        func matches(_ pattern: JSON, _ action: String, element: String = "Action") throws -> Bool {
            let policy = try PolicyDocument(parsing: document([("Effect", "Allow"), ("Principal", "*"), (element, pattern), ("Resource", "*")]))
            return policy.evaluate(Fixture.request(action), as: .resource).allowsPrincipal
        }
        #expect(try matches("kms:Decrypt", "kms:Decrypt"))
        #expect(try matches("KMS:decrypt", "kms:Decrypt"))
        #expect(try matches("kms:Decrypt", "KMS:DECRYPT"))
        #expect(try !matches("kms:Decrypt", "kms:Encrypt"))
        #expect(try matches("kms:*", "kms:ScheduleKeyDeletion"))
        #expect(try matches("*", "kms:ScheduleKeyDeletion"))
        #expect(try matches("kms:Get*", "kms:GetPublicKey"))
        #expect(try !matches("kms:Get*", "kms:DescribeKey"))
        #expect(try matches("kms:ReEncrypt*", "kms:ReEncryptFrom"))
        #expect(try matches("kms:GenerateDataKey*", "kms:GenerateDataKeyPairWithoutPlaintext"))
        #expect(try matches("kms:?ncrypt", "kms:Encrypt"))
        #expect(try !matches("kms:Decrypt?", "kms:Decrypt"))
        #expect(try !matches("kms:*", "s3:GetObject"))
        #expect(try matches(["kms:Encrypt", "kms:Decrypt"], "kms:Decrypt"))

        #expect(try matches("kms:Decrypt", "kms:Encrypt", element: "NotAction"))
        #expect(try !matches("kms:Decrypt", "kms:Decrypt", element: "NotAction"))
        #expect(try !matches(["kms:Create*", "kms:Delete*"], "kms:CreateGrant", element: "NotAction"))
        #expect(try matches(["kms:Create*", "kms:Delete*"], "kms:Decrypt", element: "NotAction"))
        #expect(try !matches("*", "kms:Decrypt", element: "NotAction"))
    }

    @Test func resourcesMatchCaseSensitivelyWithWildcards() throws {
        func matches(_ pattern: JSON, _ resource: String, element: String = "Resource") throws -> Bool {
            let policy = try PolicyDocument(parsing: document([("Effect", "Allow"), ("Principal", "*"), ("Action", "kms:*"), (element, pattern)]))
            return policy.evaluate(Fixture.request(resource: resource), as: .resource).allowsPrincipal
        }
        #expect(try matches("*", Fixture.key))
        #expect(try matches(.string(Fixture.key), Fixture.key))
        #expect(try !matches(.string(Fixture.key), Fixture.otherKey))
        #expect(try !matches(.string(Fixture.key.uppercased()), Fixture.key))
        #expect(try matches("arn:aws:kms:*:111122223333:key/*", Fixture.key))
        #expect(try !matches("arn:aws:kms:*:444455556666:key/*", Fixture.key))
        #expect(try matches([.string(Fixture.otherKey), .string(Fixture.key)], Fixture.key))

        #expect(try matches(.string(Fixture.otherKey), Fixture.key, element: "NotResource"))
        #expect(try !matches(.string(Fixture.key), Fixture.key, element: "NotResource"))
        #expect(try !matches("*", Fixture.key, element: "NotResource"))
    }

    @Test func explicitDenyAndAllowAreBothReported() throws {
        let json = """
            {"Version": "2012-10-17", "Statement": [
              {"Sid": "Admins", "Effect": "Allow", "Principal": {"AWS": "\(Fixture.alice)"}, "Action": "kms:*", "Resource": "*"},
              {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
              {"Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:Describe*", "Resource": "*"}
            ]}
            """
        let policy = try PolicyDocument(parsing: json, as: .resource)
        var insecure = ConditionContext()
        insecure.set("aws:SecureTransport", "false")
        #expect(
            policy.evaluate(Fixture.request(context: insecure), as: .resource)
                == PolicyDecision(explicitDeny: true, allowsPrincipal: true, matchedStatements: ["Admins", "statement 2"]))
        var secure = ConditionContext()
        secure.set("aws:SecureTransport", "true")
        #expect(policy.evaluate(Fixture.request(context: secure), as: .resource) == PolicyDecision(allowsPrincipal: true, matchedStatements: ["Admins"]))
        #expect(
            policy.evaluate(Fixture.request("kms:DescribeKey", principal: Fixture.bob), as: .resource)
                == PolicyDecision(allowedAccounts: [Fixture.account], matchedStatements: ["statement 3"]))
        #expect(policy.evaluate(Fixture.request(principal: Fixture.bob, context: insecure), as: .resource) == PolicyDecision(explicitDeny: true, matchedStatements: ["statement 2"]))
    }

    @Test func identityPoliciesApplyToTheCaller() throws {
        let json = """
            {"Version": "2012-10-17", "Statement": [
              {"Sid": "UseKeys", "Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "arn:aws:kms:*:111122223333:key/*"},
              {"Sid": "NoDeletion", "Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"}
            ]}
            """
        let policy = try PolicyDocument(parsing: json, as: .identity)
        #expect(policy.evaluate(Fixture.request(), as: .identity) == PolicyDecision(allowsPrincipal: true, matchedStatements: ["UseKeys"]))
        #expect(policy.evaluate(Self.outsider, as: .identity) == PolicyDecision(allowsPrincipal: true, matchedStatements: ["UseKeys"]))
        #expect(policy.evaluate(Fixture.request("kms:ScheduleKeyDeletion"), as: .identity) == PolicyDecision(explicitDeny: true, matchedStatements: ["NoDeletion"]))
        #expect(policy.evaluate(Fixture.request(resource: "arn:aws:kms:us-east-1:444455556666:key/x"), as: .identity) == Self.nothing)
        // Statements the kind forbids never match.
        #expect(policy.evaluate(Fixture.request(), as: .resource) == Self.nothing)
        #expect(try keyPolicy("*").evaluate(Fixture.request(), as: .identity) == Self.nothing)
    }

    @Test func theDefaultKeyPolicyDelegatesToTheAccount() throws {
        let policy = try PolicyDocument(parsing: PolicyParsingTests.defaultKeyPolicy, as: .resource)
        let sid = ["Enable IAM User Permissions"]
        #expect(policy.evaluate(Fixture.request("kms:ScheduleKeyDeletion"), as: .resource) == PolicyDecision(allowedAccounts: [Fixture.account], matchedStatements: sid))
        #expect(
            policy.evaluate(Fixture.request(principal: Fixture.root), as: .resource)
                == PolicyDecision(allowsPrincipal: true, allowedAccounts: [Fixture.account], matchedStatements: sid))
        #expect(policy.evaluate(Self.outsider, as: .resource) == Self.nothing)
        #expect(policy.evaluate(Self.service, as: .resource) == Self.nothing)
    }

    @Test func theRDSManagedKeyPolicyAllowsUseThroughRDSOnly() throws {
        let policy = try PolicyDocument(parsing: PolicyParsingTests.rdsManagedKeyPolicy, as: .resource)
        let viaRDS = "Allow access through RDS for all principals in the account that are authorized to use RDS"
        let metadata = "Allow direct access to key metadata to the account"
        var throughRDS = ConditionContext()
        throughRDS.set("kms:CallerAccount", "111122223333")
        throughRDS.set("kms:ViaService", "rds.us-east-1.amazonaws.com")

        #expect(policy.evaluate(Fixture.request(context: throughRDS), as: .resource) == PolicyDecision(allowsPrincipal: true, matchedStatements: [viaRDS]))
        #expect(policy.evaluate(Fixture.request("kms:ReEncryptTo", context: throughRDS), as: .resource).allowsPrincipal)
        #expect(policy.evaluate(Fixture.request("kms:GenerateDataKeyWithoutPlaintext", context: throughRDS), as: .resource).allowsPrincipal)
        #expect(policy.evaluate(Fixture.request("kms:ScheduleKeyDeletion", context: throughRDS), as: .resource) == Self.nothing)
        // Directly, only metadata, and only through the account's identity policies.
        #expect(policy.evaluate(Fixture.request(), as: .resource) == Self.nothing)
        #expect(
            policy.evaluate(Fixture.request("kms:DescribeKey"), as: .resource)
                == PolicyDecision(allowedAccounts: [Fixture.account], matchedStatements: [metadata]))
        #expect(
            policy.evaluate(Fixture.request("kms:DescribeKey", context: throughRDS), as: .resource)
                == PolicyDecision(allowsPrincipal: true, allowedAccounts: [Fixture.account], matchedStatements: [viaRDS, metadata]))
        // Another account's caller, even through RDS, is refused: its CallerAccount differs.
        var otherThroughRDS = throughRDS
        otherThroughRDS.set("kms:CallerAccount", Fixture.otherAccount)
        #expect(policy.evaluate(Fixture.request(principal: Fixture.outsider, account: Fixture.otherAccount, context: otherThroughRDS), as: .resource) == Self.nothing)
        var elsewhere = throughRDS
        elsewhere.set("kms:ViaService", "rds.eu-west-1.amazonaws.com")
        #expect(policy.evaluate(Fixture.request(context: elsewhere), as: .resource) == Self.nothing)
    }
}
