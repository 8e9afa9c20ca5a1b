import Foundation
import KMS
import Testing

/// SplitMix64: tiny, fast and fully specified, so a seed reproduces the same cases on every platform and
/// Swift version (the standard library's `random(in:using:)` algorithms are not promised to stay the same).
struct SplitMix64 {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    /// A non-empty subset, in a random order.
    mutating func subset<T>(_ items: [T], max: Int) -> [T] {
        var pool = items
        var chosen: [T] = []
        for _ in 0..<(1 + below(Swift.min(max, items.count))) { chosen.append(pool.remove(at: below(pool.count))) }
        return chosen
    }

    /// `key` with each letter's case flipped at random: condition keys are case-insensitive.
    mutating func scrambleCase(_ key: String) -> String {
        String(key.map { chance(30) ? Character(String($0).uppercased()) : $0 })
    }
}

/// Random single-statement key policies and requests, checked against an oracle written here from the IAM rules
/// as plain set logic. The oracle shares no code with the evaluator.
@Suite struct PolicyPropertyTests {
    static let caseCount = 2_000
    /// Override with POLICY_PROPERTY_SEED=<n> to replay a run, or POLICY_PROPERTY_CASE_SEED=<n> to replay the one
    /// case a failure names.
    static let seed: UInt64 = ProcessInfo.processInfo.environment["POLICY_PROPERTY_SEED"].flatMap { UInt64($0) } ?? 0x7E27_2026_0B1C_5EED
    static let caseSeed: UInt64? = ProcessInfo.processInfo.environment["POLICY_PROPERTY_CASE_SEED"].flatMap { UInt64($0) }

    // MARK: The model

    enum Principal: Equatable {
        case star, awsStar, account(String), root(String), arn(String), service(String)
    }

    struct Condition {
        var qualifier: String?  // "ForAnyValue" / "ForAllValues"
        var base: String  // StringEquals, StringNotEquals, StringLike, Null
        var ifExists: Bool
        var key: String  // canonical spelling; written with scrambled case
        var spelledKey: String
        var values: [String]

        var operatorName: String { (qualifier.map { $0 + ":" } ?? "") + base + (ifExists ? "IfExists" : "") }
    }

    struct Statement {
        var sid: String?
        var allow: Bool
        var notPrincipal: Bool
        var principals: [Principal]
        var stringPrincipal: Bool  // write a lone `star` as "Principal": "*"
        var notAction: Bool
        var actions: [String]
        var notResource: Bool
        var resources: [String]
        var conditions: [Condition]
    }

    struct Caller {
        var arn: String
        var account: String?
    }

    struct Request {
        var caller: Caller
        var action: String
        var resource: String
        var context: [String: [String]]  // canonical key → values; a key with [] is set but empty
    }

    static let account = "111122223333"
    static let otherAccount = "444455556666"
    static let alice = "arn:aws:iam::111122223333:user/alice"
    static let mallory = "arn:aws:iam::444455556666:user/mallory"
    static let keyARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    static let otherKeyARN = "arn:aws:kms:us-east-1:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321"

    static let callers = [
        Caller(arn: alice, account: account),
        Caller(arn: "arn:aws:iam::111122223333:root", account: account),
        Caller(arn: mallory, account: otherAccount),
        Caller(arn: "rds.amazonaws.com", account: nil),
    ]
    static let principals: [Principal] = [
        .star, .awsStar, .account(account), .root(account), .account(otherAccount), .arn(alice), .arn(mallory),
        .arn("arn:aws:iam::111122223333:user/bob"), .service("rds.amazonaws.com"), .service("s3.amazonaws.com"),
    ]
    static let keyValues: [String: (request: [String], policy: [String])] = [
        "kms:ViaService": (["rds.us-east-1.amazonaws.com", "s3.us-east-1.amazonaws.com"], ["rds.us-east-1.amazonaws.com", "s3.us-east-1.amazonaws.com", "rds.*"]),
        "kms:CallerAccount": ([account, otherAccount], [account, otherAccount, "1111*"]),
        "kms:EncryptionContextKeys": (["Department", "Project", "Team"], ["Department", "Project", "Dep*", "Team"]),
    ]
    static let keys = ["kms:ViaService", "kms:CallerAccount", "kms:EncryptionContextKeys"]

    // MARK: Generation

    static func statement(_ random: inout SplitMix64) -> Statement {
        var conditions: [Condition] = []
        var spelledNames: Set<String> = []
        for _ in 0..<random.below(3) {
            let key = random.pick(keys)
            var condition: Condition
            if random.chance(15) {
                condition = Condition(qualifier: nil, base: "Null", ifExists: false, key: key, spelledKey: key, values: [random.pick(["true", "false"])])
            } else {
                let qualifier: String? = random.pick([nil, nil, "ForAnyValue", "ForAllValues"])
                let base = random.pick(["StringEquals", "StringNotEquals", "StringLike"])
                let values = random.subset(keyValues[key]?.policy ?? [], max: 2)
                condition = Condition(qualifier: qualifier, base: base, ifExists: random.chance(25), key: key, spelledKey: key, values: values)
            }
            condition.spelledKey = random.scrambleCase(key)
            // One JSON object may not repeat a member name; differently-cased spellings of a key are fine (they AND).
            guard spelledNames.insert(condition.operatorName + "/" + condition.spelledKey).inserted else { continue }
            conditions.append(condition)
        }
        // Biased towards the two principals that decide most: everyone, and the caller's usual account.
        let principals: [Principal] =
            random.chance(20) ? [.star] : random.chance(25) ? [random.pick([.account(account), .root(account)])] : random.subset(Self.principals, max: 3)
        return Statement(
            sid: random.chance(50) ? "S\(random.below(100))" : nil,
            allow: random.chance(60),
            notPrincipal: random.chance(15),
            principals: principals,
            stringPrincipal: random.chance(50),
            notAction: random.chance(20),
            actions: random.subset(["kms:Encrypt", "kms:Decrypt", "kms:*"], max: 2),
            notResource: random.chance(15),
            resources: random.subset(["*", keyARN, otherKeyARN], max: 2),
            conditions: conditions)
    }

    static func request(_ random: inout SplitMix64) -> Request {
        var context: [String: [String]] = [:]
        for key in keys where random.chance(70) {
            let values = keyValues[key]?.request ?? []
            if key == "kms:EncryptionContextKeys" {
                context[key] = random.chance(15) ? [] : random.subset(values, max: 2)
            } else {
                context[key] = [random.pick(values)]
            }
        }
        return Request(
            caller: random.pick(callers), action: random.pick(["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]),
            resource: random.pick([keyARN, otherKeyARN]), context: context)
    }

    // MARK: Rendering

    static func json(_ statement: Statement) -> String {
        func strings(_ items: [String]) -> String { "[" + items.map { "\"\($0)\"" }.joined(separator: ",") + "]" }
        var members: [String] = []
        if let sid = statement.sid { members.append(#""Sid":"\#(sid)""#) }
        members.append(#""Effect":"\#(statement.allow ? "Allow" : "Deny")""#)
        let principalElement = statement.notPrincipal ? "NotPrincipal" : "Principal"
        if statement.principals == [.star], statement.stringPrincipal {
            members.append(#""\#(principalElement)":"*""#)
        } else {
            var aws: [String] = []
            var services: [String] = []
            for principal in statement.principals {
                switch principal {
                case .star, .awsStar: aws.append("*")
                case .account(let id): aws.append(id)
                case .root(let id): aws.append("arn:aws:iam::\(id):root")
                case .arn(let arn): aws.append(arn)
                case .service(let name): services.append(name)
                }
            }
            var types: [String] = []
            if !aws.isEmpty { types.append(#""AWS":\#(strings(aws))"#) }
            if !services.isEmpty { types.append(#""Service":\#(strings(services))"#) }
            members.append(#""\#(principalElement)":{\#(types.joined(separator: ","))}"#)
        }
        members.append(#""\#(statement.notAction ? "NotAction" : "Action")":\#(strings(statement.actions))"#)
        members.append(#""\#(statement.notResource ? "NotResource" : "Resource")":\#(strings(statement.resources))"#)
        if !statement.conditions.isEmpty {
            var byOperator: [(String, [String])] = []
            for condition in statement.conditions {
                let entry = #""\#(condition.spelledKey)":\#(strings(condition.values))"#
                if let index = byOperator.firstIndex(where: { $0.0 == condition.operatorName }) {
                    byOperator[index].1.append(entry)
                } else {
                    byOperator.append((condition.operatorName, [entry]))
                }
            }
            let operators = byOperator.map { #""\#($0.0)":{\#($0.1.joined(separator: ","))}"# }
            members.append(#""Condition":{\#(operators.joined(separator: ","))}"#)
        }
        return #"{"Version":"2012-10-17","Statement":[{\#(members.joined(separator: ","))}]}"#
    }

    static func policyRequest(_ request: Request, _ random: inout SplitMix64) -> PolicyRequest {
        var context = ConditionContext()
        for (key, values) in request.context.sorted(by: { $0.key < $1.key }) {
            let spelled = random.scrambleCase(key)
            if values.count == 1, random.chance(50) { context.set(spelled, values[0]) } else { context.set(spelled, values: values) }
        }
        return PolicyRequest(
            action: request.action, resource: request.resource, principalARN: request.caller.arn, principalAccount: request.caller.account,
            context: context)
    }

    // MARK: The oracle

    static func expected(_ statement: Statement, _ request: Request) -> PolicyDecision {
        let caller = request.caller

        // Who the statement names: exactly (the caller itself, or everyone), and by the caller's account.
        var namesCallerExactly = false
        var namesCallerAccount = false
        for principal in statement.principals {
            switch principal {
            case .star, .awsStar: namesCallerExactly = true
            case .arn(let arn), .service(let arn): if arn == caller.arn { namesCallerExactly = true }
            case .account(let id), .root(let id):
                if caller.arn == "arn:aws:iam::\(id):root" { namesCallerExactly = true }
                if id == caller.account { namesCallerAccount = true }
            }
        }
        let principalApplies: Bool
        if statement.notPrincipal {
            // IAM: a listed account in NotPrincipal exempts only that account's root user.
            principalApplies = !namesCallerExactly
        } else {
            principalApplies = namesCallerExactly || namesCallerAccount
        }

        let actionListed = statement.actions.contains { $0 == "kms:*" || $0 == request.action }
        let actionApplies = statement.notAction ? !actionListed : actionListed
        let resourceListed = statement.resources.contains { $0 == "*" || $0 == request.resource }
        let resourceApplies = statement.notResource ? !resourceListed : resourceListed

        let conditionsHold = statement.conditions.allSatisfy { holds($0, request.context) }

        guard principalApplies, actionApplies, resourceApplies, conditionsHold else { return PolicyDecision() }
        var decision = PolicyDecision(matchedStatements: [statement.sid ?? "statement 1"])
        if !statement.allow {
            decision.explicitDeny = true
        } else if statement.notPrincipal {
            decision.allowsPrincipal = true
        } else {
            decision.allowsPrincipal = namesCallerExactly
            if namesCallerAccount, let account = caller.account { decision.allowedAccounts = [account] }
        }
        return decision
    }

    static func holds(_ condition: Condition, _ context: [String: [String]]) -> Bool {
        let present: Set<String>? = context[condition.key].flatMap { $0.isEmpty ? nil : Set($0) }
        if condition.base == "Null" {
            return condition.values.contains("true") ? present == nil : present != nil
        }
        let negated = condition.base == "StringNotEquals"
        guard let present else {
            if condition.ifExists { return true }
            if condition.qualifier == "ForAllValues" { return true }
            if condition.qualifier == "ForAnyValue" { return false }
            return negated
        }
        // Split the context values into those that equal (or are like) some policy value, and the rest.
        let policy = Set(condition.values)
        let matching: Set<String>
        if condition.base == "StringLike" {
            matching = present.filter { value in
                policy.contains { $0.hasSuffix("*") ? value.hasPrefix($0.dropLast()) : value == $0 }
            }
        } else {
            matching = present.intersection(policy)
        }
        let rest = present.subtracting(matching)
        switch (condition.qualifier, negated) {
        case (nil, false), ("ForAnyValue", false): return !matching.isEmpty
        case (nil, true), ("ForAllValues", true): return matching.isEmpty
        case ("ForAnyValue", true): return !rest.isEmpty
        default: return rest.isEmpty  // ForAllValues, positive
        }
    }

    // MARK: The property

    @Test func evaluatorAgreesWithTheOracle() throws {
        var seeds = SplitMix64(state: Self.seed)
        var failures = 0
        var outcomes: [String: Int] = [:]
        for index in 0..<(Self.caseSeed == nil ? Self.caseCount : 1) {
            let caseSeed = Self.caseSeed ?? seeds.next()
            var random = SplitMix64(state: caseSeed)
            let statement = Self.statement(&random)
            let request = Self.request(&random)
            let json = Self.json(statement)
            let policy: PolicyDocument
            do {
                policy = try PolicyDocument(parsing: json, as: .resource)
            } catch {
                Issue.record("case \(index) (seed \(caseSeed), run seed \(Self.seed)): \(error.message)\n\(json)")
                failures += 1
                continue
            }
            let actual = policy.evaluate(Self.policyRequest(request, &random), as: .resource)
            let expected = Self.expected(statement, request)
            if actual != expected {
                failures += 1
                Issue.record("""
                    case \(index) (seed \(caseSeed), run seed \(Self.seed)): evaluator \(actual) but oracle \(expected)
                    policy: \(json)
                    request: \(request.caller.arn) \(request.action) \(request.resource) context \(request.context)
                    """)
            }
            let outcome = expected.explicitDeny ? "deny" : expected.allowsPrincipal ? "allow" : expected.allowedAccounts.isEmpty ? "none" : "account"
            outcomes[outcome, default: 0] += 1
            if failures >= 10 { break }
        }
        // The generator must exercise every outcome, or the agreement says little.
        for outcome in ["deny", "allow", "account", "none"] where Self.caseSeed == nil {
            #expect((outcomes[outcome] ?? 0) >= 20, "too few \(outcome) cases: \(outcomes) (run seed \(Self.seed))")
        }
    }

    @Test func theGeneratorIsDeterministic() {
        var first = SplitMix64(state: 42)
        var second = SplitMix64(state: 42)
        #expect((0..<5).map { _ in first.next() } == (0..<5).map { _ in second.next() })
        // SplitMix64's published first output for seed 0.
        var zero = SplitMix64(state: 0)
        #expect(zero.next() == 0xE220_A839_7B1D_CDAF)
    }
}
