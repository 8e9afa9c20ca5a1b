import KMS
import Testing

/// One row: operator, policy values, the context values of the key (nil: absent), and whether the condition holds.
struct ConditionCase: Sendable, CustomTestStringConvertible {
    var operatorName: String
    var policy: [String]
    var context: [String]?
    var holds: Bool

    init(_ operatorName: String, _ policy: [String], _ context: [String]?, _ holds: Bool) {
        self.operatorName = operatorName
        self.policy = policy
        self.context = context
        self.holds = holds
    }

    var testDescription: String {
        "\(operatorName) \(policy) with \(context.map { "\($0)" } ?? "absent") → \(holds)"
    }
}

/// Every operator, positive and negated, over a single key "test:key": present, absent, multi-valued,
/// unparseable, with IfExists and with the set qualifiers.
@Suite struct ConditionOperatorTests {
    static let strings: [ConditionCase] = [
        .init("StringEquals", ["a"], ["a"], true),
        .init("StringEquals", ["a"], ["A"], false),
        .init("StringEquals", ["a"], nil, false),
        .init("StringEquals", ["x", "a"], ["a"], true),
        .init("StringEquals", ["a"], ["b", "a"], true),
        .init("StringEquals", ["a"], [], false),
        .init("StringNotEquals", ["a"], ["a"], false),
        .init("StringNotEquals", ["a"], ["b"], true),
        .init("StringNotEquals", ["a", "b"], ["b"], false),
        .init("StringNotEquals", ["a", "b"], ["c"], true),
        .init("StringNotEquals", ["a"], ["b", "a"], false),
        .init("StringNotEquals", ["a"], nil, true),
        .init("StringEqualsIgnoreCase", ["ABC"], ["abc"], true),
        .init("StringEqualsIgnoreCase", ["ABC"], ["abd"], false),
        .init("StringEqualsIgnoreCase", ["ABC"], nil, false),
        .init("StringNotEqualsIgnoreCase", ["ABC"], ["aBc"], false),
        .init("StringNotEqualsIgnoreCase", ["ABC"], ["x"], true),
        .init("StringNotEqualsIgnoreCase", ["ABC"], nil, true),
        .init("StringLike", ["rds.*"], ["rds.us-east-1.amazonaws.com"], true),
        .init("StringLike", ["rds.*"], ["s3.us-east-1.amazonaws.com"], false),
        .init("StringLike", ["RDS.*"], ["rds.us-east-1.amazonaws.com"], false),
        .init("StringLike", ["a?c"], ["abc"], true),
        .init("StringLike", ["a?c"], ["abbc"], false),
        .init("StringLike", ["*"], [""], true),
        .init("StringLike", ["a*b*c"], ["aXXbYYbZc"], true),
        .init("StringLike", ["a*b*c"], ["aXXbYYbZ"], false),
        .init("StringLike", ["rds.*"], nil, false),
        .init("StringNotLike", ["rds.*"], ["rds.x"], false),
        .init("StringNotLike", ["rds.*"], ["s3.x"], true),
        .init("StringNotLike", ["rds.*", "s3.*"], ["s3.x"], false),
        .init("StringNotLike", ["rds.*"], nil, true),
        .init("StringEqualsIfExists", ["a"], nil, true),
        .init("StringEqualsIfExists", ["a"], ["a"], true),
        .init("StringEqualsIfExists", ["a"], ["b"], false),
        .init("StringNotEqualsIfExists", ["a"], nil, true),
        .init("StringNotEqualsIfExists", ["a"], ["a"], false),
        .init("StringLikeIfExists", ["a*"], ["ab"], true),
        .init("StringLikeIfExists", ["a*"], ["ba"], false),
    ]

    static let numbers: [ConditionCase] = [
        .init("NumericEquals", ["10"], ["10"], true),
        .init("NumericEquals", ["10"], ["10.0"], true),
        .init("NumericEquals", ["10"], ["1e1"], true),
        .init("NumericEquals", ["10"], ["11"], false),
        .init("NumericEquals", ["10"], ["ten"], false),
        .init("NumericEquals", ["10"], ["0xA"], false),
        .init("NumericEquals", ["ten"], ["10"], false),
        .init("NumericEquals", ["10"], nil, false),
        .init("NumericNotEquals", ["10"], ["11"], true),
        .init("NumericNotEquals", ["10"], ["10"], false),
        .init("NumericNotEquals", ["10"], ["ten"], false),
        .init("NumericNotEquals", ["10"], ["nan"], false),
        .init("NumericNotEquals", ["10"], nil, true),
        .init("NumericLessThan", ["10"], ["9.5"], true),
        .init("NumericLessThan", ["10"], ["10"], false),
        .init("NumericLessThan", ["10"], ["-20"], true),
        .init("NumericLessThan", ["10"], nil, false),
        .init("NumericLessThanEquals", ["10"], ["10"], true),
        .init("NumericLessThanEquals", ["10"], ["11"], false),
        .init("NumericGreaterThan", ["10"], ["11"], true),
        .init("NumericGreaterThan", ["10"], ["10"], false),
        .init("NumericGreaterThanEquals", ["10"], ["10"], true),
        .init("NumericGreaterThanEquals", ["10"], ["9"], false),
        .init("NumericGreaterThanEquals", ["10"], ["1e999"], false),
        .init("NumericLessThanIfExists", ["10"], nil, true),
        .init("NumericLessThanIfExists", ["10"], ["12"], false),
    ]

    static let dates: [ConditionCase] = [
        .init("DateEquals", ["2026-01-01T00:00:00Z"], ["2026-01-01"], true),
        .init("DateEquals", ["2026-01-01T00:00:00Z"], ["1767225600"], true),
        .init("DateEquals", ["2026-01-01T00:00:00Z"], ["2026-01-01T02:00:00+02:00"], true),
        .init("DateEquals", ["2026-01-01T00:00:00Z"], ["2026-01-01T00:00:00.000Z"], true),
        .init("DateEquals", ["1767225600"], ["2026-01-01T00:00:00Z"], true),
        .init("DateEquals", ["2026-01-01T00:00:00Z"], ["2026-01-01T00:00:01Z"], false),
        .init("DateEquals", ["2026-01-01T00:00:00Z"], ["not a date"], false),
        .init("DateEquals", ["2026-02-30"], ["2026-02-30"], false),
        .init("DateEquals", ["2024-02-29"], ["2024-02-29T00:00Z"], true),
        .init("DateEquals", ["2026-01-01T00:00:00Z"], nil, false),
        .init("DateNotEquals", ["2026-01-01"], ["2026-01-02"], true),
        .init("DateNotEquals", ["2026-01-01"], ["2026-01-01T00:00:00Z"], false),
        .init("DateNotEquals", ["2026-01-01"], ["garbage"], false),
        .init("DateNotEquals", ["2026-01-01"], nil, true),
        .init("DateLessThan", ["2026-01-01T00:00:00Z"], ["2025-12-31T23:59:59Z"], true),
        .init("DateLessThan", ["2026-01-01T00:00:00Z"], ["2026-01-01T00:00:01Z"], false),
        .init("DateLessThan", ["2026-01-01T00:00:00Z"], ["2026-01-01T01:00:00+02:00"], true),
        .init("DateLessThan", ["2026-01-01T00:00:00Z"], ["2025-12-31T23:00:00-02:00"], false),
        .init("DateLessThan", ["2026-01-01T00:00:00Z"], nil, false),
        .init("DateLessThanEquals", ["2026-01-01"], ["2026-01-01T00:00:00Z"], true),
        .init("DateLessThanEquals", ["2026-01-01"], ["2026-01-01T00:00:00.5Z"], false),
        .init("DateGreaterThan", ["2026-01-01"], ["2026-06-01"], true),
        .init("DateGreaterThan", ["2026-01-01"], ["2025-06-01"], false),
        .init("DateGreaterThanEquals", ["2026-01-01"], ["2026-01-01"], true),
        .init("DateGreaterThanEquals", ["2026-01-01"], ["2025-12-31"], false),
        .init("DateGreaterThanIfExists", ["2026-01-01"], nil, true),
    ]

    static let others: [ConditionCase] = [
        .init("Bool", ["true"], ["true"], true),
        .init("Bool", ["true"], ["TRUE"], true),
        .init("Bool", ["true"], ["false"], false),
        .init("Bool", ["false"], ["false"], true),
        .init("Bool", ["true"], ["yes"], false),
        .init("Bool", ["true"], nil, false),
        .init("BoolIfExists", ["true"], nil, true),
        .init("BinaryEquals", ["aGVsbG8="], ["aGVsbG8="], true),
        .init("BinaryEquals", ["aGVsbG8="], ["d29ybGQ="], false),
        .init("BinaryEquals", ["aGVsbG8="], ["!!"], false),
        .init("BinaryEquals", ["aGVsbG8="], nil, false),
        .init("IpAddress", ["203.0.113.0/24"], ["203.0.113.7"], true),
        .init("IpAddress", ["203.0.113.0/24"], ["203.0.114.7"], false),
        .init("IpAddress", ["10.0.0.1"], ["10.0.0.1"], true),
        .init("IpAddress", ["10.0.0.1"], ["10.0.0.2"], false),
        .init("IpAddress", ["0.0.0.0/0"], ["198.51.100.9"], true),
        .init("IpAddress", ["10.0.0.0/33"], ["10.0.0.1"], false),
        .init("IpAddress", ["10.0.0.0/8"], ["300.1.1.1"], false),
        .init("IpAddress", ["10.0.0.0/8"], ["10.0.0"], false),
        .init("IpAddress", ["10.0.0.0/8"], ["::ffff:10.0.0.1"], false),
        .init("IpAddress", ["2001:db8::/32"], ["2001:db8:1::5"], true),
        .init("IpAddress", ["2001:db8::/32"], ["2001:db9::1"], false),
        .init("IpAddress", ["2001:DB8:0:0:0:0:0:1"], ["2001:db8::1"], true),
        .init("IpAddress", ["::ffff:192.0.2.0/120"], ["::ffff:192.0.2.77"], true),
        .init("IpAddress", ["::/0"], ["::"], true),
        .init("IpAddress", ["2001:db8::/32"], ["2001:db8::1::2"], false),
        .init("IpAddress", ["2001:db8::/32"], ["2001:db8:0:0:0:0:0:0:1"], false),
        .init("IpAddress", ["10.0.0.0/8", "192.168.0.0/16"], ["192.168.4.4"], true),
        .init("IpAddress", ["10.0.0.0/8"], nil, false),
        .init("NotIpAddress", ["203.0.113.0/24"], ["198.51.100.1"], true),
        .init("NotIpAddress", ["203.0.113.0/24"], ["203.0.113.7"], false),
        .init("NotIpAddress", ["203.0.113.0/24"], ["garbage"], false),
        .init("NotIpAddress", ["203.0.113.0/24"], nil, true),
        .init("ArnEquals", ["arn:aws:iam::111122223333:role/x"], ["arn:aws:iam::111122223333:role/x"], true),
        .init("ArnEquals", ["arn:aws:iam::111122223333:role/x"], ["arn:aws:iam::111122223333:role/y"], false),
        .init("ArnEquals", ["arn:aws:iam::111122223333:role/x"], ["arn:aws:iam::111122223333:ROLE/x"], false),
        .init("ArnEquals", ["arn:aws:iam::111122223333:role/x"], ["not-an-arn"], false),
        .init("ArnEquals", ["arn:aws:iam::111122223333:role/x"], nil, false),
        .init("ArnLike", ["arn:aws:iam::*:role/*"], ["arn:aws:iam::111122223333:role/x"], true),
        .init("ArnLike", ["arn:aws:iam::*:role/*"], ["arn:aws:sts::111122223333:assumed-role/x/s"], false),
        .init("ArnLike", ["arn:aws:iam::11112222333?:role/x"], ["arn:aws:iam::111122223333:role/x"], true),
        .init("ArnLike", ["arn:*:kms:*:111122223333:key/*"], ["arn:aws:kms:us-east-1:111122223333:key/k"], true),
        .init("ArnLike", ["arn:aws:kms:*:111122223333:key/*"], ["arn:aws:kms:us-east-1:111122223333:alias/k"], false),
        // A wildcard stays inside its component: as one glob "a*" would swallow "ws:iam".
        .init("ArnLike", ["arn:a*::111122223333:role/x"], ["arn:aws:iam::111122223333:role/x"], false),
        .init("ArnLike", ["*"], ["arn:aws:iam::111122223333:role/x"], false),
        .init("ArnNotEquals", ["arn:aws:iam::111122223333:role/x"], ["arn:aws:iam::111122223333:role/y"], true),
        .init("ArnNotEquals", ["arn:aws:iam::111122223333:role/x"], ["arn:aws:iam::111122223333:role/x"], false),
        .init("ArnNotEquals", ["arn:aws:iam::111122223333:role/x"], nil, true),
        .init("ArnNotLike", ["arn:aws:iam::*:role/*"], ["arn:aws:iam::111122223333:user/x"], true),
        .init("ArnNotLike", ["arn:aws:iam::*:role/*"], ["arn:aws:iam::111122223333:role/x"], false),
        .init("ArnNotLike", ["arn:aws:iam::*:role/*"], ["not-an-arn"], false),
        .init("ArnNotLike", ["arn:aws:iam::*:role/*"], nil, true),
        .init("Null", ["true"], nil, true),
        .init("Null", ["true"], ["x"], false),
        .init("Null", ["true"], [], true),
        .init("Null", ["false"], nil, false),
        .init("Null", ["false"], ["x"], true),
        .init("Null", ["maybe"], nil, false),
    ]

    static let sets: [ConditionCase] = [
        .init("ForAnyValue:StringEquals", ["Department", "Project"], ["Team", "Project"], true),
        .init("ForAnyValue:StringEquals", ["Department", "Project"], ["Team"], false),
        .init("ForAnyValue:StringEquals", ["Department"], nil, false),
        .init("ForAnyValue:StringEquals", ["Department"], [], false),
        .init("ForAnyValue:StringEqualsIfExists", ["Department"], nil, true),
        .init("ForAllValues:StringEquals", ["Department", "Project"], ["Department"], true),
        .init("ForAllValues:StringEquals", ["Department", "Project"], ["Project", "Department"], true),
        .init("ForAllValues:StringEquals", ["Department", "Project"], ["Department", "Team"], false),
        .init("ForAllValues:StringEquals", ["Department"], nil, true),
        .init("ForAllValues:StringEquals", ["Department"], [], true),
        .init("ForAllValues:StringEqualsIfExists", ["Department"], nil, true),
        .init("ForAllValues:StringEqualsIfExists", ["Department"], ["Team"], false),
        .init("ForAnyValue:StringNotEquals", ["a"], ["a", "b"], true),
        .init("ForAnyValue:StringNotEquals", ["a"], ["a"], false),
        .init("ForAnyValue:StringNotEquals", ["a"], nil, false),
        .init("ForAllValues:StringNotEquals", ["a"], ["b", "c"], true),
        .init("ForAllValues:StringNotEquals", ["a"], ["a", "b"], false),
        .init("ForAllValues:StringNotEquals", ["a"], nil, true),
        .init("ForAllValues:StringLike", ["Dep*"], ["Department", "Deputy"], true),
        .init("ForAllValues:StringLike", ["Dep*"], ["Department", "Team"], false),
        .init("ForAnyValue:StringLike", ["Dep*"], ["Team", "Deputy"], true),
        .init("ForAnyValue:StringNotLike", ["Dep*"], ["Department", "Deputy"], false),
        .init("ForAnyValue:NumericGreaterThan", ["5"], ["1", "9"], true),
        .init("ForAllValues:NumericGreaterThan", ["5"], ["1", "9"], false),
        .init("ForAllValues:NumericGreaterThan", ["5"], ["6", "x"], false),
        .init("ForAnyValue:IpAddress", ["10.0.0.0/8"], ["192.0.2.1", "10.1.2.3"], true),
        .init("ForAllValues:ArnLike", ["arn:aws:kms:*:111122223333:alias/*"], ["arn:aws:kms:us-east-1:111122223333:alias/a"], true),
    ]

    @Test(arguments: strings + numbers + dates + others + sets)
    func operatorTable(_ row: ConditionCase) throws {
        var context = ConditionContext()
        if let values = row.context { context.set("test:key", values: values) }
        let values = JSON.array(row.policy.map(JSON.string))
        #expect(try conditionHolds(row.operatorName, "test:key", values, context: context) == row.holds)
    }

    @Test func numberAndBooleanPolicyValuesCompareAsTheirText() throws {
        var context = ConditionContext()
        context.set("aws:MultiFactorAuthAge", "300")
        context.set("aws:SecureTransport", "true")
        #expect(try conditionHolds("NumericLessThan", "aws:MultiFactorAuthAge", .raw("3600"), context: context))
        #expect(try !conditionHolds("NumericLessThan", "aws:MultiFactorAuthAge", .raw("3e2"), context: context))
        #expect(try conditionHolds("Bool", "aws:SecureTransport", .raw("true"), context: context))
        #expect(try !conditionHolds("Bool", "aws:SecureTransport", .raw("false"), context: context))
        #expect(try conditionHolds("StringEquals", "aws:SecureTransport", .raw("true"), context: context))
        #expect(try conditionHolds("Null", "aws:SourceIp", .raw("true"), context: context))
    }

    @Test func operatorsAndKeysWithinAStatementAllMustHold() throws {
        let json = document([
            ("Effect", "Allow"), ("Principal", "*"), ("Action", "kms:Decrypt"), ("Resource", "*"),
            (
                "Condition",
                .object([
                    ("StringEquals", .object([("kms:CallerAccount", "111122223333"), ("kms:ViaService", ["rds.us-east-1.amazonaws.com", "s3.us-east-1.amazonaws.com"])])),
                    ("Bool", .object([("aws:SecureTransport", "true")])),
                ])
            ),
        ])
        let policy = try PolicyDocument(parsing: json)
        func allows(_ pairs: [String: String]) -> Bool {
            var context = ConditionContext()
            for (key, value) in pairs { context.set(key, value) }
            return policy.evaluate(Fixture.request(context: context), as: .resource).allowsPrincipal
        }
        let all = ["kms:CallerAccount": "111122223333", "kms:ViaService": "s3.us-east-1.amazonaws.com", "aws:SecureTransport": "true"]
        #expect(allows(all))
        for key in all.keys {
            var missing = all
            missing[key] = nil
            #expect(!allows(missing), "without \(key)")
        }
        #expect(!allows(all.merging(["kms:ViaService": "ec2.us-east-1.amazonaws.com"]) { $1 }))
    }

    @Test func conditionKeysAreCaseInsensitiveExceptTheEncryptionContextKey() throws {
        var context = ConditionContext()
        context.set("kms:ViaService", "rds.us-east-1.amazonaws.com")
        context.set("kms:EncryptionContext:Department", "IT")
        #expect(context.values(for: "KMS:VIASERVICE") == ["rds.us-east-1.amazonaws.com"])
        #expect(context.values(for: "Kms:EncryptionContext:Department") == ["IT"])
        #expect(context.values(for: "KMS:ENCRYPTIONCONTEXT:Department") == ["IT"])
        #expect(context.values(for: "kms:EncryptionContext:department") == nil)
        #expect(context.values(for: "kms:EncryptionContext:") == nil)
        #expect(context.values(for: "aws:SourceIp") == nil)

        #expect(try conditionHolds("StringEquals", "KMS:VIASERVICE", "rds.us-east-1.amazonaws.com", context: context))
        #expect(try conditionHolds("StringEquals", "kms:encryptioncontext:Department", "IT", context: context))
        #expect(try !conditionHolds("StringEquals", "kms:EncryptionContext:department", "IT", context: context))
        #expect(try !conditionHolds("StringEquals", "kms:EncryptionContext:Department", "it", context: context))
        #expect(try conditionHolds("StringEqualsIgnoreCase", "kms:EncryptionContext:Department", "it", context: context))
        #expect(try conditionHolds("Null", "kms:EncryptionContext:department", "true", context: context))

        // The multi-valued kms:EncryptionContextKeys is an ordinary, case-insensitive key; its values are case-sensitive.
        context.set("kms:EncryptionContextKeys", values: ["Department"])
        #expect(context.values(for: "KMS:ENCRYPTIONCONTEXTKEYS") == ["Department"])
        #expect(try conditionHolds("ForAllValues:StringEquals", "kms:encryptioncontextkeys", ["Department", "Project"], context: context))
        #expect(try !conditionHolds("ForAnyValue:StringEquals", "kms:EncryptionContextKeys", ["department"], context: context))
    }

    @Test func contextSettersReplaceEarlierValues() {
        var context = ConditionContext()
        context.set("aws:TagKeys", values: ["a", "b"])
        context.set("AWS:TAGKEYS", "c")
        #expect(context.values(for: "aws:tagkeys") == ["c"])
        var other = ConditionContext()
        other.set("aws:TagKeys", values: ["c"])
        #expect(context == other)
    }
}
