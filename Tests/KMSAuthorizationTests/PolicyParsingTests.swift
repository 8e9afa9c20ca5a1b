import KMS
import Testing

/// The grammar: AWS's own policies parse to what they say, and each malformed shape is refused with a message
/// that names the element and the statement.
@Suite struct PolicyParsingTests {
    static let defaultKeyPolicy = """
        {
          "Version": "2012-10-17",
          "Id": "key-default-1",
          "Statement": [
            {
              "Sid": "Enable IAM User Permissions",
              "Effect": "Allow",
              "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
              "Action": "kms:*",
              "Resource": "*"
            }
          ]
        }
        """

    static let rdsManagedKeyPolicy = """
        {"Version":"2012-10-17","Id":"auto-rds-2","Statement":[{"Sid":"Allow access through RDS for all principals in the account that are authorized to use RDS","Effect":"Allow","Principal":{"AWS":"*"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:CreateGrant","kms:ListGrants","kms:DescribeKey"],"Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333","kms:ViaService":"rds.us-east-1.amazonaws.com"}}},{"Sid":"Allow direct access to key metadata to the account","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":["kms:Describe*","kms:Get*","kms:List*","kms:RevokeGrant"],"Resource":"*"}]}
        """

    @Test func parsesTheDefaultKeyPolicy() throws {
        let policy = try PolicyDocument(parsing: Self.defaultKeyPolicy, as: .resource)
        #expect(policy.version == "2012-10-17")
        #expect(policy.id == "key-default-1")
        #expect(
            policy.statements == [
                PolicyStatement(
                    sid: "Enable IAM User Permissions", effect: .allow, principal: .including([.account("111122223333")]),
                    action: .including(["kms:*"]), resource: .including(["*"]))
            ])
    }

    @Test func parsesTheRDSManagedKeyPolicy() throws {
        let policy = try PolicyDocument(parsing: Self.rdsManagedKeyPolicy, as: .resource)
        #expect(policy.id == "auto-rds-2")
        try #require(policy.statements.count == 2)
        let viaRDS = policy.statements[0]
        #expect(viaRDS.principal == .including([.anyone]))
        #expect(
            viaRDS.action
                == .including([
                    "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:ListGrants",
                    "kms:DescribeKey",
                ]))
        #expect(
            viaRDS.conditions == [
                PolicyCondition(ConditionOperator(.stringEquals), key: "kms:CallerAccount", values: ["111122223333"]),
                PolicyCondition(ConditionOperator(.stringEquals), key: "kms:ViaService", values: ["rds.us-east-1.amazonaws.com"]),
            ])
        #expect(policy.statements[1].principal == .including([.account("111122223333")]))
        #expect(policy.statements[1].action == .including(["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"]))
    }

    @Test func parsesEveryElementForm() throws {
        let json = """
            {"Version": "2008-10-17", "Statement": {
              "Effect": "Deny",
              "NotPrincipal": {"AWS": ["111122223333", "arn:aws:iam::111122223333:role/app"], "Service": "rds.amazonaws.com"},
              "NotAction": ["kms:Decrypt", "kms:Encrypt"],
              "NotResource": "arn:aws:kms:us-east-1:111122223333:key/*",
              "Condition": {
                "ForAllValues:StringLikeIfExists": {"kms:EncryptionContextKeys": ["Dep*", "Proj*"]},
                "NumericLessThan": {"aws:MultiFactorAuthAge": 3600},
                "Bool": {"aws:SecureTransport": false},
                "Null": {"kms:ViaService": "true"}
              }
            }}
            """
        let policy = try PolicyDocument(parsing: json)
        #expect(policy.version == "2008-10-17")
        #expect(policy.id == nil)
        let statement = try #require(policy.statements.first)
        #expect(statement.sid == nil)
        #expect(statement.effect == .deny)
        #expect(statement.principal == .excluding([.account("111122223333"), .arn(Fixture.role), .service("rds.amazonaws.com")]))
        #expect(statement.action == .excluding(["kms:Decrypt", "kms:Encrypt"]))
        #expect(statement.resource == .excluding(["arn:aws:kms:us-east-1:111122223333:key/*"]))
        #expect(
            statement.conditions == [
                PolicyCondition(
                    ConditionOperator(.stringLike, qualifier: .forAllValues, ifExists: true), key: "kms:EncryptionContextKeys",
                    values: ["Dep*", "Proj*"]),
                PolicyCondition(ConditionOperator(.numericLessThan), key: "aws:MultiFactorAuthAge", values: ["3600"]),
                PolicyCondition(ConditionOperator(.bool), key: "aws:SecureTransport", values: ["false"]),
                PolicyCondition(ConditionOperator(.null), key: "kms:ViaService", values: ["true"]),
            ])
    }

    @Test func readsJSONEscapesAndKeepsNumberText() throws {
        let json = #"{"Statement":{"Sid":"caf\u00e9 \ud83d\ude00 \"q\"","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"NumericEquals":{"k":[1.50,-2e3,0]}}}}"#
        let statement = try #require(try PolicyDocument(parsing: json).statements.first)
        #expect(statement.sid == "café 😀 \"q\"")
        #expect(statement.conditions.first?.values == ["1.50", "-2e3", "0"])
    }

    @Test func parsesEveryConditionOperatorName() throws {
        for base in ConditionOperator.Base.allCases {
            #expect(ConditionOperator(name: base.rawValue) == ConditionOperator(base))
            guard base != .null else { continue }
            #expect(ConditionOperator(name: base.rawValue + "IfExists") == ConditionOperator(base, ifExists: true))
            #expect(ConditionOperator(name: "ForAnyValue:" + base.rawValue) == ConditionOperator(base, qualifier: .forAnyValue))
            #expect(
                ConditionOperator(name: "ForAllValues:" + base.rawValue + "IfExists")
                    == ConditionOperator(base, qualifier: .forAllValues, ifExists: true))
        }
        for name in ["NullIfExists", "ForAnyValue:Null", "stringequals", "ForAnyValue:ForAllValues:StringEquals", "ForAnyValue", "IfExists", ""] {
            #expect(ConditionOperator(name: name) == nil, "\(name)")
        }
    }

    /// Each malformed document, and a fragment its error message must contain.
    static let malformed: [(json: String, message: String)] = [
        ("", "not valid JSON"),
        ("not json", "not valid JSON"),
        (#"{"Statement": []"#, "not valid JSON"),
        (#"{"Statement": {"Effect": "Allow"}} trailing"#, "not valid JSON"),
        (#"{"Statement": "\x"}"#, "not valid JSON"),
        (#"{"Effect": "Allow", "Effect": "Deny"}"#, "duplicate member name \"Effect\""),
        ("[]", "must be a JSON object"),
        (#"{"Version": "2012-10-17"}"#, "no Statement"),
        (#"{"Version": "2012-10-17", "Statement": [], "Foo": 1}"#, "unknown element \"Foo\""),
        (#"{"Version": "2020-01-01", "Statement": []}"#, "Version must be"),
        (#"{"Version": 2012, "Statement": []}"#, "Version must be"),
        (#"{"Id": 7, "Statement": []}"#, "Id must be a string"),
        (#"{"Statement": []}"#, "Statement must be"),
        (#"{"Statement": "Allow"}"#, "Statement must be"),
        (#"{"Statement": [1]}"#, "Statement 1 must be a JSON object"),
        (#"{"Statement": {"Sid": 1, "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}}"#, "Sid must be a string"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Actions": "kms:*", "Resource": "*"}}"#, "unknown element \"Actions\""),
        (#"{"Statement": {"Principal": "*", "Action": "kms:*", "Resource": "*"}}"#, "Statement 1 has no Effect"),
        (#"{"Statement": {"Effect": "allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}}"#, "Effect must be"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Resource": "*"}}"#, "neither Action nor NotAction"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "NotAction": "kms:Decrypt", "Resource": "*"}}"#, "both Action and NotAction"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*"}}"#, "neither Resource nor NotResource"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "NotResource": "*"}}"#, "both Resource and NotResource"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "NotPrincipal": "*", "Action": "kms:*", "Resource": "*"}}"#, "both Principal and NotPrincipal"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": [], "Resource": "*"}}"#, "Action must not be an empty array"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": 5, "Resource": "*"}}"#, "Action must be a string or an array of strings"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": ["kms:Decrypt", 5], "Resource": "*"}}"#, "Action must be a string"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "Decrypt", "Resource": "*"}}"#, "invalid action \"Decrypt\""),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": ""}}"#, "Resource contains an empty string"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "arn:aws:iam::111122223333:root", "Action": "kms:*", "Resource": "*"}}"#, "Principal must be"),
        (#"{"Statement": {"Effect": "Allow", "Principal": {}, "Action": "kms:*", "Resource": "*"}}"#, "Principal must be"),
        (#"{"Statement": {"Effect": "Allow", "Principal": {"AWS": "alice"}, "Action": "kms:*", "Resource": "*"}}"#, "invalid AWS principal \"alice\""),
        (#"{"Statement": {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/*"}, "Action": "kms:*", "Resource": "*"}}"#, "invalid AWS principal"),
        (#"{"Statement": {"Effect": "Allow", "Principal": {"AWS": []}, "Action": "kms:*", "Resource": "*"}}"#, "Principal.AWS must not be an empty array"),
        (#"{"Statement": {"Effect": "Allow", "Principal": {"Bogus": "x"}, "Action": "kms:*", "Resource": "*"}}"#, "unknown principal type \"Bogus\""),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": "x"}}"#, "Condition must be an object"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEqualz": {"k": "v"}}}}"#, "unknown condition operator \"StringEqualz\""),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"NullIfExists": {"k": "true"}}}}"#, "unknown condition operator \"NullIfExists\""),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals": "v"}}}"#, "must map to a non-empty object"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals": {}}}}"#, "must map to a non-empty object"),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals": {"k": {"a": "b"}}}}}"#, "value of StringEquals \"k\""),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals": {"k": null}}}}"#, "value of StringEquals \"k\""),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals": {"k": []}}}}"#, "value of StringEquals \"k\""),
        (#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": {"StringEquals": {"k": ["a", ["b"]]}}}}"#, "value of StringEquals \"k\""),
        (#"{"Statement": [{"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}, {"Sid": "A", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}"#, "repeats the Sid \"A\""),
    ]

    @Test func refusesEachMalformedDocument() {
        for (json, fragment) in Self.malformed {
            do {
                _ = try PolicyDocument(parsing: json)
                Issue.record("accepted a malformed policy: \(json)")
            } catch {
                #expect(error.message.contains(fragment), "\(json) → \(error.message)")
                #expect(error.description == error.message)
            }
        }
    }

    @Test func errorsNameTheStatementBySidOrPosition() {
        let second = #"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}, {"Effect": "Maybe", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}"#
        #expect(throws: PolicyDocumentError("Statement 2: Effect must be \"Allow\" or \"Deny\".")) { try PolicyDocument(parsing: second) }
        let named = #"{"Statement": {"Sid": "Admins", "Effect": "Allow", "Principal": "*", "Action": "kms:*"}}"#
        #expect(throws: PolicyDocumentError("Statement \"Admins\" has neither Resource nor NotResource.")) { try PolicyDocument(parsing: named) }
    }

    @Test func refusesNestingBeyondTheLimit() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: PolicyDocumentError.self) { try PolicyDocument(parsing: #"{"Id": "x", "Statement": \#(deep)}"#) }
    }

    @Test func kindRulesForPrincipals() throws {
        let withPrincipal = #"{"Statement": {"Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"}}"#
        let withNotPrincipal = #"{"Statement": {"Effect": "Deny", "NotPrincipal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"}}"#
        let withoutPrincipal = #"{"Statement": {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}}"#
        _ = try PolicyDocument(parsing: withPrincipal, as: .resource)
        _ = try PolicyDocument(parsing: withNotPrincipal, as: .resource)
        _ = try PolicyDocument(parsing: withoutPrincipal, as: .identity)
        #expect(throws: PolicyDocumentError.self) { try PolicyDocument(parsing: withPrincipal, as: .identity) }
        #expect(throws: PolicyDocumentError.self) { try PolicyDocument(parsing: withNotPrincipal, as: .identity) }
        #expect(throws: PolicyDocumentError.self) { try PolicyDocument(parsing: withoutPrincipal, as: .resource) }
    }
}
