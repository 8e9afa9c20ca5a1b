import Foundation
@testable import KMS

/// Key and identity policies: the strict parser, the evaluator, the condition operators and their value
/// parsers (numbers, dates, IP networks, ARNs), condition-key normalisation and the glob matcher.
///
/// Input: a policy document (the text PutKeyPolicy or CreateKey carries).
///
/// Properties: no trap; a document is a valid key policy or a valid identity policy, never both; evaluating it
/// for requests made from its own principals, actions, resources and condition values (and the usual global
/// keys) gives decisions consistent with its statements; every operator and its negation agree on a
/// single-valued key (exact opposites for the string operators); absent keys, IfExists and the set qualifiers
/// behave as IAM documents them; key normalisation matches its definition (and its ASCII fast path the general
/// one); the glob matcher agrees with a dynamic-programming reference; a network contains its own address.
enum PolicyTarget {
    static let target = FuzzTarget(name: "policy", maximumLength: 4096, summary: "PolicyDocument parsing and evaluation, ConditionOperators") { bytes in
        run(String(decoding: bytes, as: UTF8.self))
    }

    static let keyARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    static func run(_ text: String) {
        let document: PolicyDocument
        do {
            document = try PolicyDocument(parsing: text)
        } catch {
            check(!error.message.isEmpty, "a refusal without a message")
            return
        }
        check(!document.statements.isEmpty, "a policy without statements was accepted")
        let sids = document.statements.compactMap(\.sid)
        check(Set(sids).count == sids.count, "a policy with a repeated Sid was accepted")
        let isKeyPolicy = (try? document.validate(as: .resource)) != nil
        let isIdentityPolicy = (try? document.validate(as: .identity)) != nil
        check(!(isKeyPolicy && isIdentityPolicy), "a document is both a valid key policy and a valid identity policy")
        check(((try? PolicyDocument(parsing: text, as: .resource)) != nil) == isKeyPolicy, "init(parsing:as:) and validate(as:) disagree")

        let strings = collectStrings(document)
        for condition in document.statements.flatMap(\.conditions).prefix(16) { checkCondition(condition) }
        for key in strings.keys { checkNormalization(key) }
        for value in strings.values { checkValueParsers(value) }
        let globTexts = Array((strings.patterns + strings.values + [keyARN, "kms:Decrypt"]).prefix(12))
        for pattern in globTexts { for text in globTexts { checkGlob(pattern: pattern, text) } }

        for request in requests(for: document, strings) {
            for kind in [PolicyKind.resource, .identity] {
                let decision = document.evaluate(request, as: kind)
                check(decision.matchedStatements.count <= document.statements.count, "more matches than statements")
                check(!decision.explicitDeny || document.statements.contains { $0.effect == .deny }, "an explicit deny without a Deny statement")
                let allows = decision.allowsPrincipal || !decision.allowedAccounts.isEmpty
                check(!allows || document.statements.contains { $0.effect == .allow }, "an allow without an Allow statement")
                check(
                    decision.allowedAccounts.isSubset(of: Set([request.principalAccount].compactMap { $0 })),
                    "the key policy delegates to an account that is not the caller's: \(decision.allowedAccounts)")
                if kind == .identity { check(decision.allowedAccounts.isEmpty, "an identity policy delegated to an account") }
                if kind == .resource && !isKeyPolicy && decision.allowsPrincipal {
                    // Statements without a principal never match in a key policy.
                    check(document.statements.contains { $0.principal != nil && $0.effect == .allow }, "a principal-less statement matched as a key policy")
                }
            }
        }
    }

    // MARK: What the document names

    struct Strings {
        var principals: [PolicyPrincipal] = []
        var patterns: [String] = []
        var keys: [String] = []
        var values: [String] = []
    }

    static func collectStrings(_ document: PolicyDocument) -> Strings {
        var strings = Strings()
        for statement in document.statements {
            if let principal = statement.principal { strings.principals += principal.items }
            strings.patterns += statement.action.items + statement.resource.items
            for condition in statement.conditions {
                strings.keys.append(condition.key)
                strings.values += condition.values
            }
        }
        strings.principals = Array(strings.principals.prefix(4))
        strings.patterns = Array(strings.patterns.prefix(8))
        strings.keys = Array(strings.keys.prefix(8))
        strings.values = Array(strings.values.prefix(8))
        return strings
    }

    /// Requests whose principal, action, resource and condition keys come from the document itself, so the
    /// evaluator's matching paths are reached, plus the usual callers.
    static func requests(for document: PolicyDocument, _ strings: Strings) -> [PolicyRequest] {
        var callers: [(arn: String, account: String?)] = [
            ("arn:aws:iam::111122223333:user/alice", "111122223333"), ("arn:aws:iam::111122223333:root", "111122223333"),
            ("rds.us-east-1.amazonaws.com", nil),
        ]
        for principal in strings.principals {
            switch principal {
            case .account(let account): callers.append(("arn:aws:iam::\(account):root", account))
            case .arn(let arn): callers.append((arn, ARNParts(arn)?.account))
            case .service(let name): callers.append((name, nil))
            case .anyone, .federated, .canonicalUser: continue
            }
        }
        let concrete = { (pattern: String) in pattern.replacingOccurrences(of: "*", with: "").replacingOccurrences(of: "?", with: "x") }
        let actions = ["kms:Decrypt"] + document.statements.flatMap(\.action.items).prefix(2).map(concrete)
        let resources = [keyARN] + document.statements.flatMap(\.resource.items).prefix(1).map(concrete)

        var base = ConditionContext()
        base.set("aws:PrincipalArn", "arn:aws:iam::111122223333:user/alice")
        base.set("aws:CurrentTime", "2026-11-23T15:42:26Z")
        base.set("aws:EpochTime", "1795448546")
        base.set("kms:CallerAccount", "111122223333")
        base.set("aws:SourceIp", "192.0.2.10")
        base.set("kms:ViaService", "rds.us-east-1.amazonaws.com")
        base.set("kms:EncryptionContext:purpose", "test")
        base.set("kms:EncryptionContextKeys", values: ["purpose"])
        base.set("kms:GrantOperations", values: ["Decrypt", "Encrypt"])
        var mirrored = base
        for condition in document.statements.flatMap(\.conditions).prefix(8) {
            mirrored.set(condition.key, values: condition.values)
        }

        var requests: [PolicyRequest] = []
        for caller in callers.prefix(5) {
            for action in actions {
                for resource in resources {
                    for context in [base, mirrored] {
                        requests.append(
                            PolicyRequest(action: action, resource: resource, principalARN: caller.arn, principalAccount: caller.account, context: context))
                    }
                }
            }
        }
        return requests
    }

    // MARK: Conditions

    static let negations: [ConditionOperator.Base: ConditionOperator.Base] = [
        .stringEquals: .stringNotEquals, .stringEqualsIgnoreCase: .stringNotEqualsIgnoreCase, .stringLike: .stringNotLike,
        .numericEquals: .numericNotEquals, .dateEquals: .dateNotEquals, .ipAddress: .notIpAddress, .arnEquals: .arnNotEquals,
        .arnLike: .arnNotLike,
    ]
    static let stringOperators: Set<ConditionOperator.Base> = [.stringEquals, .stringEqualsIgnoreCase, .stringLike]

    static func checkCondition(_ condition: PolicyCondition) {
        let op = condition.conditionOperator
        var contexts: [(values: [String]?, context: ConditionContext)] = [(nil, ConditionContext())]
        func add(_ values: [String]) {
            var context = ConditionContext()
            context.set(condition.key, values: values)
            contexts.append((values, context))
        }
        for value in condition.values.prefix(3) {
            add([value])
            add([value + "x"])
            add([value.uppercased()])
        }
        add(condition.values)
        add([])
        add(["", "192.0.2.10", "2026-01-01T00:00:00Z", "42", "true", "arn:aws:iam::111122223333:user/alice"])

        for (values, context) in contexts {
            let satisfied = condition.isSatisfied(by: context)
            let present = values.map { !$0.isEmpty } ?? false
            if !present {
                // An absent key (or an empty list, which counts as absent).
                if op.base == .null {
                    check(satisfied == condition.values.contains { $0.lowercased() == "true" }, "Null on an absent key")
                } else if op.ifExists {
                    check(satisfied, "\(op) on an absent key does not hold")
                } else if op.qualifier == .forAllValues {
                    check(satisfied, "ForAllValues on an absent key does not hold")
                } else if op.qualifier == .forAnyValue {
                    check(!satisfied, "ForAnyValue on an absent key holds")
                } else {
                    check(satisfied == op.base.isNegated, "\(op) on an absent key")
                }
                continue
            }
            if op.base == .null {
                check(satisfied == condition.values.contains { $0.lowercased() == "false" }, "Null on a present key")
                continue
            }
            // A positive operator and its negation on one value: never both; for strings, exactly one.
            guard let values, values.count == 1, op.qualifier == nil else { continue }
            let positiveBase = negations[op.base] != nil ? op.base : negations.first { $0.value == op.base }?.key
            guard let positiveBase, let negatedBase = negations[positiveBase] else { continue }
            let positive = PolicyCondition(ConditionOperator(positiveBase, ifExists: op.ifExists), key: condition.key, values: condition.values)
            let negated = PolicyCondition(ConditionOperator(negatedBase, ifExists: op.ifExists), key: condition.key, values: condition.values)
            let (holds, negationHolds) = (positive.isSatisfied(by: context), negated.isSatisfied(by: context))
            check(!(holds && negationHolds), "\(positiveBase) and \(negatedBase) both hold for \(values) against \(condition.values)")
            if stringOperators.contains(positiveBase) {
                check(holds != negationHolds, "\(positiveBase) and \(negatedBase) both fail for \(values) against \(condition.values)")
            }
            // A set qualifier on one value is the plain operator.
            for qualifier in [ConditionOperator.SetQualifier.forAnyValue, .forAllValues] {
                let qualified = PolicyCondition(ConditionOperator(positiveBase, qualifier: qualifier), key: condition.key, values: condition.values)
                check(qualified.isSatisfied(by: context) == holds, "\(qualifier.rawValue):\(positiveBase) on one value differs from \(positiveBase)")
            }
        }
    }

    /// Condition keys are case-insensitive except the encryption-context key after `kms:EncryptionContext:`.
    static func checkNormalization(_ key: String) {
        let prefix = "kms:encryptioncontext:"
        let normalized = ConditionContext.normalized(key)
        let head = key.prefix(prefix.count)
        let reference = head.count == prefix.count && head.lowercased() == prefix ? prefix + key.dropFirst(prefix.count) : key.lowercased()
        check(normalized == reference, "normalized(\(key.debugDescription)) is \(normalized.debugDescription), not \(reference.debugDescription)")
        check(ConditionContext.normalized(normalized) == normalized, "normalisation is not idempotent for \(key.debugDescription)")
        guard key.utf8.allSatisfy({ $0 < 0x80 }) else { return }
        let isContextKey = key.utf8.count > prefix.utf8.count && key.prefix(prefix.count).lowercased() == prefix
        let uppercased = isContextKey ? prefix.uppercased() + key.dropFirst(prefix.count) : key.uppercased()
        check(ConditionContext.normalized(uppercased) == normalized, "\(key.debugDescription) and \(uppercased.debugDescription) are different keys")
    }

    static func checkValueParsers(_ value: String) {
        if let number = ConditionValue.number(value) { check(number.isFinite, "a non-finite number from \(value.debugDescription)") }
        if let date = ConditionValue.date(value) { check(date.isFinite, "a non-finite date from \(value.debugDescription)") }
        if let address = IPNetwork(address: value) {
            check(address.bytes.count == 4 || address.bytes.count == 16, "an address of \(address.bytes.count) bytes")
            check(IPNetwork(cidr: value)?.contains(address) == true, "the network \(value) does not contain its own address")
        }
        if let network = IPNetwork(cidr: value) {
            check(network.prefixLength >= 0 && network.prefixLength <= network.bytes.count * 8, "prefix length \(network.prefixLength)")
            let base = String(value.split(separator: "/", omittingEmptySubsequences: false)[0])
            guard let address = IPNetwork(address: base) else {
                check(false, "the network \(value) has no address \(base)")
                return
            }
            check(network.contains(address), "the network \(value) does not contain \(base)")
        }
        if let arn = ARNParts(value) { check(arn.components.count == 6 && arn.components[0] == "arn", "ARN parts of \(value)") }
    }

    // MARK: Glob

    static func checkGlob(pattern: String, _ text: String) {
        guard pattern.utf8.count <= 256, text.utf8.count <= 256 else { return }
        let matches = globMatches(pattern: pattern, text)
        let reference: Bool
        if pattern.utf8.allSatisfy({ $0 < 0x80 }) && text.utf8.allSatisfy({ $0 < 0x80 }) {
            reference = referenceGlob(Array(pattern.utf8), Array(text.utf8), star: UInt8(ascii: "*"), any: UInt8(ascii: "?"))
        } else {
            reference = referenceGlob(Array(pattern), Array(text), star: "*", any: "?")
        }
        check(matches == reference, "globMatches(\(pattern.debugDescription), \(text.debugDescription)) is \(matches), the reference says \(reference)")
    }

    /// `*` any run, `?` one element: the textbook dynamic programme, row by row.
    static func referenceGlob<Element: Equatable>(_ pattern: [Element], _ text: [Element], star: Element, any: Element) -> Bool {
        var row = [Bool](repeating: false, count: text.count + 1)
        row[0] = true
        for element in pattern {
            var next = [Bool](repeating: false, count: text.count + 1)
            if element == star { next[0] = row[0] }
            for column in 1...max(1, text.count) where column <= text.count {
                if element == star {
                    next[column] = row[column] || next[column - 1]
                } else if element == any || element == text[column - 1] {
                    next[column] = row[column - 1]
                }
            }
            row = next
        }
        return row[text.count]
    }
}
