import JSON
/// A parsed IAM-style policy (key policy or identity policy).
///
/// Parsing is strict: anything AWS would answer with `MalformedPolicyDocumentException` is refused here, so a
/// stored document is always one the evaluator understands completely.
public struct PolicyDocument: Sendable, Equatable {
    /// "2012-10-17" or "2008-10-17"; nil when absent.
    public var version: String?
    public var id: String?
    public var statements: [PolicyStatement]

    /// The two policy-language versions AWS accepts.
    public static let supportedVersions: Set<String> = ["2012-10-17", "2008-10-17"]

    public init(version: String? = "2012-10-17", id: String? = nil, statements: [PolicyStatement]) {
        self.version = version
        self.id = id
        self.statements = statements
    }

    /// Parses the rules every policy obeys, whatever it is attached to. Use `init(parsing:as:)` to also check
    /// the rules of one kind (a key policy names principals; an identity policy must not).
    ///
    /// Throws PolicyDocumentError with a message saying what is wrong (which element, which statement).
    public init(parsing json: String) throws(PolicyDocumentError) {
        guard case .object(let members) = try PolicyJSON.parse(json) else {
            throw PolicyDocumentError("The policy must be a JSON object.")
        }
        var version: String?
        var id: String?
        var statementValue: PolicyJSON?
        for member in members {
            switch member.key {
            case "Version":
                guard case .string(let text) = member.value, Self.supportedVersions.contains(text) else {
                    throw PolicyDocumentError("Version must be \"2012-10-17\" or \"2008-10-17\".")
                }
                version = text
            case "Id":
                guard case .string(let text) = member.value else { throw PolicyDocumentError("Id must be a string.") }
                id = text
            case "Statement":
                statementValue = member.value
            default:
                throw PolicyDocumentError("The policy contains an unknown element \"\(member.key)\".")
            }
        }
        let items: [PolicyJSON]
        switch statementValue {
        case .none:
            throw PolicyDocumentError("The policy has no Statement element.")
        case .array(let array)? where !array.isEmpty:
            items = array
        case let value? where value.isObject:
            items = [value]
        default:
            throw PolicyDocumentError("Statement must be an object or a non-empty array of objects.")
        }
        var statements: [PolicyStatement] = []
        var sids: Set<String> = []
        for (offset, item) in items.enumerated() {
            let statement = try PolicyStatement(parsing: item, number: offset + 1)
            if let sid = statement.sid, !sids.insert(sid).inserted {
                throw PolicyDocumentError("Statement \(offset + 1) repeats the Sid \"\(sid)\"; Sids must be unique within a policy.")
            }
            statements.append(statement)
        }
        self.init(version: version, id: id, statements: statements)
    }

    /// Parses, then checks the rules of `kind`: every statement of a key policy names a principal; no
    /// statement of an identity policy does (the principal is whoever the policy is attached to).
    public init(parsing json: String, as kind: PolicyKind) throws(PolicyDocumentError) {
        try self.init(parsing: json)
        try validate(as: kind)
    }

    /// The rules that depend on what the document is attached to; see `init(parsing:as:)`.
    public func validate(as kind: PolicyKind) throws(PolicyDocumentError) {
        for (offset, statement) in statements.enumerated() {
            let name = PolicyStatement.label(number: offset + 1, sid: statement.sid)
            switch kind {
            case .resource where statement.principal == nil:
                throw PolicyDocumentError("\(name) has neither Principal nor NotPrincipal; a key policy statement must name its principals.")
            case .identity where statement.principal != nil:
                throw PolicyDocumentError("\(name) has a Principal or NotPrincipal element, which an identity policy must not have.")
            default:
                continue
            }
        }
    }
}

/// Why a policy document was refused. `message` is safe to return to the client.
public struct PolicyDocumentError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a policy is attached to, which decides how its statements match principals.
public enum PolicyKind: Sendable {
    /// A key policy: each statement names the principals it applies to.
    case resource
    /// A policy attached to the caller: it has no Principal element and applies to the caller.
    case identity
}

/// One statement of a policy.
public struct PolicyStatement: Sendable, Equatable {
    public enum Effect: String, Sendable {
        case allow = "Allow"
        case deny = "Deny"
    }

    public var sid: String?
    public var effect: Effect
    /// `Principal` (`.including`) or `NotPrincipal` (`.excluding`); nil when neither is present (identity policies).
    public var principal: StatementScope<PolicyPrincipal>?
    /// `Action` or `NotAction` patterns, matched case-insensitively with `*` and `?`.
    public var action: StatementScope<String>
    /// `Resource` or `NotResource` patterns, matched case-sensitively with `*` and `?`.
    public var resource: StatementScope<String>
    /// Every operator/key pair of the `Condition` block; all must hold.
    public var conditions: [PolicyCondition]

    public init(
        sid: String? = nil, effect: Effect, principal: StatementScope<PolicyPrincipal>?, action: StatementScope<String>,
        resource: StatementScope<String>, conditions: [PolicyCondition] = []
    ) {
        self.sid = sid
        self.effect = effect
        self.principal = principal
        self.action = action
        self.resource = resource
        self.conditions = conditions
    }

    /// How diagnostics and errors name a statement: its Sid, or its 1-based position.
    static func label(number: Int, sid: String?) -> String {
        sid.map { "Statement \"\($0)\"" } ?? "Statement \(number)"
    }
}

/// A list element and its `Not…` twin: `Action`/`NotAction`, `Resource`/`NotResource`, `Principal`/`NotPrincipal`.
public enum StatementScope<Item: Sendable & Equatable>: Sendable, Equatable {
    /// The statement applies to what the list matches.
    case including([Item])
    /// The statement applies to everything the list does not match.
    case excluding([Item])
}

/// One entry of a Principal or NotPrincipal element.
public enum PolicyPrincipal: Sendable, Equatable, Hashable {
    /// `"*"` or `{"AWS": "*"}`: every principal.
    case anyone
    /// `"111122223333"` or `"arn:aws:iam::111122223333:root"`: the account, which delegates to its identity policies.
    case account(String)
    /// Any other IAM ARN (user, role, assumed role): that principal exactly, case-sensitively.
    case arn(String)
    /// `{"Service": "rds.amazonaws.com"}`: a service principal, matched by name.
    case service(String)
    /// `{"Federated": …}`: accepted for compatibility; Trent has no federated callers, so it never matches.
    case federated(String)
    /// `{"CanonicalUser": …}`: accepted for compatibility (an S3 notion); never matches a KMS caller.
    case canonicalUser(String)
}

// MARK: - Statement parsing

extension PolicyStatement {
    private static let knownElements: Set<String> = [
        "Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition",
    ]

    init(parsing value: PolicyJSON, number: Int) throws(PolicyDocumentError) {
        guard case .object(let members) = value else {
            throw PolicyDocumentError("Statement \(number) must be a JSON object.")
        }
        var sid: String?
        if let sidValue = members.first(where: { $0.key == "Sid" })?.value {
            guard case .string(let text) = sidValue else { throw PolicyDocumentError("Statement \(number): Sid must be a string.") }
            sid = text
        }
        let name = Self.label(number: number, sid: sid)
        var elements: [String: PolicyJSON] = [:]
        for member in members {
            guard Self.knownElements.contains(member.key) else {
                throw PolicyDocumentError("\(name) contains an unknown element \"\(member.key)\".")
            }
            elements[member.key] = member.value
        }

        guard let effectValue = elements["Effect"] else { throw PolicyDocumentError("\(name) has no Effect.") }
        guard case .string(let effectText) = effectValue, let effect = Effect(rawValue: effectText) else {
            throw PolicyDocumentError("\(name): Effect must be \"Allow\" or \"Deny\".")
        }

        let principal: StatementScope<PolicyPrincipal>?
        switch (elements["Principal"], elements["NotPrincipal"]) {
        case (let value?, nil): principal = .including(try Self.principals(value, element: "Principal", in: name))
        case (nil, let value?): principal = .excluding(try Self.principals(value, element: "NotPrincipal", in: name))
        case (nil, nil): principal = nil
        case (_?, _?): throw PolicyDocumentError("\(name) has both Principal and NotPrincipal.")
        }

        let action = try Self.scope(elements, "Action", "NotAction", in: name)
        for pattern in action.items where !Self.isValidAction(pattern) {
            throw PolicyDocumentError("\(name) has an invalid action \"\(pattern)\"; actions look like \"kms:Decrypt\", \"kms:*\" or \"*\".")
        }
        let resource = try Self.scope(elements, "Resource", "NotResource", in: name)
        let conditions = try elements["Condition"].map { value throws(PolicyDocumentError) in try Self.conditions(value, in: name) } ?? []

        self.init(sid: sid, effect: effect, principal: principal, action: action, resource: resource, conditions: conditions)
    }

    /// Exactly one of a pair such as Action/NotAction, as a non-empty list of non-empty strings.
    private static func scope(
        _ elements: [String: PolicyJSON], _ positive: String, _ negative: String, in name: String
    ) throws(PolicyDocumentError) -> StatementScope<String> {
        switch (elements[positive], elements[negative]) {
        case (let value?, nil): return .including(try strings(value, element: positive, in: name))
        case (nil, let value?): return .excluding(try strings(value, element: negative, in: name))
        case (nil, nil): throw PolicyDocumentError("\(name) has neither \(positive) nor \(negative).")
        case (_?, _?): throw PolicyDocumentError("\(name) has both \(positive) and \(negative).")
        }
    }

    /// A string or a non-empty array of strings; no element may be empty.
    private static func strings(_ value: PolicyJSON, element: String, in name: String) throws(PolicyDocumentError) -> [String] {
        let items: [PolicyJSON]
        switch value {
        case .string: items = [value]
        case .array(let array) where !array.isEmpty: items = array
        case .array: throw PolicyDocumentError("\(name): \(element) must not be an empty array.")
        default: throw PolicyDocumentError("\(name): \(element) must be a string or an array of strings.")
        }
        var result: [String] = []
        for item in items {
            guard case .string(let text) = item else {
                throw PolicyDocumentError("\(name): \(element) must be a string or an array of strings.")
            }
            guard !text.isEmpty else { throw PolicyDocumentError("\(name): \(element) contains an empty string.") }
            result.append(text)
        }
        return result
    }

    /// `"*"` or an object of principal type → string(s).
    private static func principals(_ value: PolicyJSON, element: String, in name: String) throws(PolicyDocumentError) -> [PolicyPrincipal] {
        switch value {
        case .string("*"):
            return [.anyone]
        case .object(let members) where !members.isEmpty:
            var result: [PolicyPrincipal] = []
            for member in members {
                let names = try strings(member.value, element: "\(element).\(member.key)", in: name)
                switch member.key {
                case "AWS":
                    for text in names {
                        guard let principal = awsPrincipal(text) else {
                            throw PolicyDocumentError("\(name) has an invalid AWS principal \"\(text)\" in \(element).")
                        }
                        result.append(principal)
                    }
                case "Service": result += names.map(PolicyPrincipal.service)
                case "Federated": result += names.map(PolicyPrincipal.federated)
                case "CanonicalUser": result += names.map(PolicyPrincipal.canonicalUser)
                default: throw PolicyDocumentError("\(name) has an unknown principal type \"\(member.key)\" in \(element).")
                }
            }
            return result
        default:
            throw PolicyDocumentError("\(name): \(element) must be \"*\" or an object such as {\"AWS\": \"arn:aws:iam::111122223333:root\"}.")
        }
    }

    /// `"*"`, a 12-digit account, an account root ARN, or another IAM/STS ARN without wildcards (AWS allows no
    /// wildcard in a principal other than a lone `*`).
    private static func awsPrincipal(_ text: String) -> PolicyPrincipal? {
        if text == "*" { return .anyone }
        if isAccountID(text) { return .account(text) }
        guard let arn = ARNParts(text), !text.contains("*"), !text.contains("?"), !arn.service.isEmpty, !arn.resource.isEmpty
        else { return nil }
        if arn.service == "iam", arn.resource == "root" {
            return isAccountID(arn.account) ? .account(arn.account) : nil
        }
        return .arn(text)
    }

    static func isAccountID(_ text: String) -> Bool {
        text.utf8.count == 12 && text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    /// `*`, or `service:pattern` where the service prefix is letters, digits and hyphens.
    private static func isValidAction(_ pattern: String) -> Bool {
        if pattern == "*" { return true }
        guard let colon = pattern.firstIndex(of: ":") else { return false }
        let service = pattern[..<colon]
        let name = pattern[pattern.index(after: colon)...]
        return !service.isEmpty && !name.isEmpty
            && service.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }

    /// `{"Operator": {"key": value | [values]}}`; numbers and Booleans become their JSON text.
    private static func conditions(_ value: PolicyJSON, in name: String) throws(PolicyDocumentError) -> [PolicyCondition] {
        guard case .object(let operators) = value else {
            throw PolicyDocumentError("\(name): Condition must be an object of condition operators.")
        }
        var result: [PolicyCondition] = []
        for entry in operators {
            guard let conditionOperator = ConditionOperator(name: entry.key) else {
                throw PolicyDocumentError("\(name) uses an unknown condition operator \"\(entry.key)\".")
            }
            guard case .object(let keys) = entry.value, !keys.isEmpty else {
                throw PolicyDocumentError("\(name): condition operator \(entry.key) must map to a non-empty object of condition keys.")
            }
            for key in keys {
                guard !key.key.isEmpty else { throw PolicyDocumentError("\(name): \(entry.key) has an empty condition key.") }
                let values = try conditionValues(key.value, operatorName: entry.key, key: key.key, in: name)
                result.append(PolicyCondition(conditionOperator, key: key.key, values: values))
            }
        }
        return result
    }

    private static func conditionValues(
        _ value: PolicyJSON, operatorName: String, key: String, in name: String
    ) throws(PolicyDocumentError) -> [String] {
        let invalid = PolicyDocumentError(
            "\(name): the value of \(operatorName) \"\(key)\" must be a string, number or Boolean, or a non-empty array of them.")
        func scalar(_ value: PolicyJSON) -> String? {
            switch value {
            case .string(let text), .number(let text): return text
            case .bool(let flag): return flag ? "true" : "false"
            default: return nil
            }
        }
        if let text = scalar(value) { return [text] }
        guard case .array(let items) = value, !items.isEmpty else { throw invalid }
        var result: [String] = []
        for item in items {
            guard let text = scalar(item) else { throw invalid }
            result.append(text)
        }
        return result
    }
}

extension StatementScope {
    var items: [Item] {
        switch self {
        case .including(let items), .excluding(let items): items
        }
    }
}

// MARK: - JSON

/// JSON as the policy grammar needs it: object members keep their order (so errors name the first offending
/// element), duplicate member names are refused (JSONSerialization would silently keep one of them, so a
/// reviewer and the evaluator could read different policies), and numbers keep their text (`10` stays "10").
/// Read by ``JSONParser``, the same reader as request bodies, with a nesting limit of 32.
enum PolicyJSON: Sendable {
    case string(String)
    case number(String)
    case bool(Bool)
    case null
    case array([PolicyJSON])
    case object([Member])

    var isObject: Bool {
        if case .object = self { return true }
        return false
    }

    struct Member: Sendable {
        var key: String
        var value: PolicyJSON
    }

    static func parse(_ text: String) throws(PolicyDocumentError) -> PolicyJSON {
        do {
            return try JSONParser.parse(Array(text.utf8), as: PolicyJSON.self, maximumDepth: 32, refusingDuplicateNames: true)
        } catch {
            throw PolicyDocumentError("The policy is not valid JSON: \(error).")
        }
    }
}

extension PolicyJSON: JSONTree {
    static var jsonNull: PolicyJSON { .null }
    init(jsonBool: Bool) { self = .bool(jsonBool) }
    init(jsonString: String) { self = .string(jsonString) }
    init(jsonNumber text: String) { self = .number(text) }
    init(jsonArray: [PolicyJSON]) { self = .array(jsonArray) }
    init(jsonObject: [(key: String, value: PolicyJSON)]) { self = .object(jsonObject.map { Member(key: $0.key, value: $0.value) }) }
}
