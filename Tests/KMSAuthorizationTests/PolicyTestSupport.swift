import KMS

/// Principals and resources the tables share.
enum Fixture {
    static let account = "111122223333"
    static let otherAccount = "444455556666"
    static let alice = "arn:aws:iam::111122223333:user/alice"
    static let bob = "arn:aws:iam::111122223333:user/bob"
    static let root = "arn:aws:iam::111122223333:root"
    static let role = "arn:aws:iam::111122223333:role/app"
    static let outsider = "arn:aws:iam::444455556666:user/mallory"
    static let rds = "rds.amazonaws.com"
    static let key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    static let otherKey = "arn:aws:kms:us-east-1:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321"

    static func request(
        _ action: String = "kms:Decrypt", principal: String = alice, account: String? = Fixture.account,
        resource: String = key, context: ConditionContext = ConditionContext()
    ) -> PolicyRequest {
        PolicyRequest(action: action, resource: resource, principalARN: principal, principalAccount: account, context: context)
    }

    static func context(_ pairs: [String: [String]]) -> ConditionContext {
        var context = ConditionContext()
        for (key, values) in pairs { context.set(key, values: values) }
        return context
    }
}

/// A minimal JSON writer for building policies in tests, so string escaping is never hand-written.
indirect enum JSON: ExpressibleByStringLiteral, ExpressibleByArrayLiteral {
    case string(String)
    case raw(String)  // a number or Boolean literal, written as is
    case array([JSON])
    case object([(String, JSON)])

    init(stringLiteral value: String) { self = .string(value) }
    init(arrayLiteral elements: JSON...) { self = .array(elements) }

    var text: String {
        switch self {
        case .string(let value):
            var escaped = "\""
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\"": escaped += "\\\""
                case "\\": escaped += "\\\\"
                case "\n": escaped += "\\n"
                default: escaped.unicodeScalars.append(scalar)
                }
            }
            return escaped + "\""
        case .raw(let literal):
            return literal
        case .array(let items):
            return "[" + items.map(\.text).joined(separator: ",") + "]"
        case .object(let members):
            return "{" + members.map { JSON.string($0.0).text + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }
}

/// A one-statement policy document around `statement` members.
func document(_ statement: [(String, JSON)], version: String = "2012-10-17") -> String {
    JSON.object([("Version", .string(version)), ("Statement", .object(statement))]).text
}

/// An Allow-everyone statement for `kms:Decrypt` guarded by one condition; whether it matches is whether
/// the condition holds.
func conditionHolds(_ operatorName: String, _ key: String, _ policyValues: JSON, context: ConditionContext) throws -> Bool {
    let json = document([
        ("Effect", "Allow"), ("Principal", "*"), ("Action", "kms:Decrypt"), ("Resource", "*"),
        ("Condition", .object([(operatorName, .object([(key, policyValues)]))])),
    ])
    let policy = try PolicyDocument(parsing: json)
    return policy.evaluate(Fixture.request(context: context), as: .resource).allowsPrincipal
}
