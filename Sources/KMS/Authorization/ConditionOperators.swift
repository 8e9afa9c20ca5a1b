import Foundation

/// Condition keys of a request. Keys are case-insensitive ("kms:ViaService" == "KMS:VIASERVICE"), except that the
/// part after "kms:EncryptionContext:" (the encryption-context key) is case-sensitive, because encryption
/// contexts themselves are. Values are strings; numeric, date, Bool and IP operators parse them.
public struct ConditionContext: Sendable, Equatable {
    private var storage: [String: [String]] = [:]

    public init() {}

    /// Sets a single-valued key, replacing any earlier value.
    public mutating func set(_ key: String, _ value: String) {
        storage[Self.normalized(key)] = [value]
    }

    /// Sets a multi-valued key (kms:EncryptionContextKeys, kms:GrantOperations, kms:ResourceAliases, aws:TagKeys …).
    /// An empty list is kept but evaluates as an absent key, as IAM treats an empty set.
    public mutating func set(_ key: String, values: [String]) {
        storage[Self.normalized(key)] = values
    }

    /// The values of `key`; nil when absent.
    public func values(for key: String) -> [String]? {
        storage[Self.normalized(key)]
    }

    private static let encryptionContextPrefix = "kms:encryptioncontext:"

    /// Lowercases the key, except the encryption-context key after "kms:EncryptionContext:".
    static func normalized(_ key: String) -> String {
        // ASCII keys, all of the built-in ones, are lowercased byte by byte (this runs a dozen times per request).
        if key.utf8.allSatisfy({ $0 < 0x80 }) {
            let count = key.utf8.count
            let prefixCount = encryptionContextPrefix.utf8.count
            return String(unsafeUninitializedCapacity: count) { buffer in
                var index = 0
                for byte in key.utf8 {
                    buffer[index] = (0x41...0x5A).contains(byte) ? byte | 0x20 : byte
                    index += 1
                }
                // The encryption-context key after the prefix keeps its case.
                if count > prefixCount, buffer[0..<prefixCount].elementsEqual(encryptionContextPrefix.utf8) {
                    var index = prefixCount
                    for byte in key.utf8.dropFirst(prefixCount) {
                        buffer[index] = byte
                        index += 1
                    }
                }
                return count
            }
        }
        let prefix = encryptionContextPrefix
        let head = key.prefix(prefix.count)
        if head.count == prefix.count, head.lowercased() == prefix {
            return prefix + key.dropFirst(prefix.count)
        }
        return key.lowercased()
    }
}

/// One operator/key pair of a statement's `Condition` block, with the policy values listed for the key.
public struct PolicyCondition: Sendable, Equatable {
    public var conditionOperator: ConditionOperator
    /// The condition key as the policy spells it; looked up case-insensitively (see `ConditionContext`).
    public var key: String
    /// The policy values; the condition holds when any of them matches (for negated operators: none matches).
    public var values: [String]

    public init(_ conditionOperator: ConditionOperator, key: String, values: [String]) {
        self.conditionOperator = conditionOperator
        self.key = key
        self.values = values
    }
}

/// A condition operator: a base comparison, optionally qualified by `ForAnyValue:`/`ForAllValues:` and `IfExists`.
public struct ConditionOperator: Sendable, Equatable, CustomStringConvertible {
    public enum SetQualifier: String, Sendable {
        case forAnyValue = "ForAnyValue"
        case forAllValues = "ForAllValues"
    }

    public enum Base: String, Sendable, CaseIterable {
        case stringEquals = "StringEquals"
        case stringNotEquals = "StringNotEquals"
        case stringEqualsIgnoreCase = "StringEqualsIgnoreCase"
        case stringNotEqualsIgnoreCase = "StringNotEqualsIgnoreCase"
        case stringLike = "StringLike"
        case stringNotLike = "StringNotLike"
        case numericEquals = "NumericEquals"
        case numericNotEquals = "NumericNotEquals"
        case numericLessThan = "NumericLessThan"
        case numericLessThanEquals = "NumericLessThanEquals"
        case numericGreaterThan = "NumericGreaterThan"
        case numericGreaterThanEquals = "NumericGreaterThanEquals"
        case dateEquals = "DateEquals"
        case dateNotEquals = "DateNotEquals"
        case dateLessThan = "DateLessThan"
        case dateLessThanEquals = "DateLessThanEquals"
        case dateGreaterThan = "DateGreaterThan"
        case dateGreaterThanEquals = "DateGreaterThanEquals"
        case bool = "Bool"
        case binaryEquals = "BinaryEquals"
        case ipAddress = "IpAddress"
        case notIpAddress = "NotIpAddress"
        case arnEquals = "ArnEquals"
        case arnNotEquals = "ArnNotEquals"
        case arnLike = "ArnLike"
        case arnNotLike = "ArnNotLike"
        case null = "Null"

        /// A negated operator holds when the context value matches none of the policy values, and holds for an
        /// absent key.
        public var isNegated: Bool {
            switch self {
            case .stringNotEquals, .stringNotEqualsIgnoreCase, .stringNotLike, .numericNotEquals, .dateNotEquals,
                .notIpAddress, .arnNotEquals, .arnNotLike:
                true
            default:
                false
            }
        }
    }

    public var base: Base
    public var qualifier: SetQualifier?
    public var ifExists: Bool

    public init(_ base: Base, qualifier: SetQualifier? = nil, ifExists: Bool = false) {
        self.base = base
        self.qualifier = qualifier
        self.ifExists = ifExists
    }

    /// Parses a name such as "ForAllValues:StringLikeIfExists". Names are case-sensitive, as IAM spells them.
    /// `Null` takes neither qualifier: it asks whether the key exists, which `IfExists` and the set
    /// qualifiers would contradict.
    public init?(name: String) {
        var rest = Substring(name)
        let qualifier = [SetQualifier.forAnyValue, .forAllValues].first { rest.hasPrefix($0.rawValue + ":") }
        if let qualifier { rest = rest.dropFirst(qualifier.rawValue.count + 1) }
        var ifExists = false
        if rest.hasSuffix("IfExists") {
            ifExists = true
            rest = rest.dropLast("IfExists".count)
        }
        guard let base = Base(rawValue: String(rest)) else { return nil }
        if base == .null, ifExists || qualifier != nil { return nil }
        self.init(base, qualifier: qualifier, ifExists: ifExists)
    }

    public var name: String {
        (qualifier.map { $0.rawValue + ":" } ?? "") + base.rawValue + (ifExists ? "IfExists" : "")
    }

    public var description: String { name }
}

// MARK: - Evaluation

extension PolicyCondition {
    /// IAM's semantics: see the cases below. An empty multi-valued key counts as absent.
    func isSatisfied(by context: ConditionContext) -> Bool {
        let present = context.values(for: key).flatMap { $0.isEmpty ? nil : $0 }
        let op = conditionOperator

        if op.base == .null {
            // "true": the key must be absent; "false": present. Listed values OR, like any other operator.
            return values.contains { value in
                switch value.lowercased() {
                case "true": present == nil
                case "false": present != nil
                default: false
                }
            }
        }

        guard let contextValues = present else {
            if op.ifExists { return true }
            switch op.qualifier {
            case .forAllValues: return true  // vacuously: every one of no values satisfies
            case .forAnyValue: return false
            case nil: return op.base.isNegated
            }
        }

        switch op.qualifier {
        case nil:
            // Positive: some context value matches some policy value. Negated: no context value matches any.
            return op.base.isNegated
                ? contextValues.allSatisfy { matchesNone($0) }
                : contextValues.contains { matchesAny($0) }
        case .forAnyValue:
            return contextValues.contains { satisfiesBase($0) }
        case .forAllValues:
            return contextValues.allSatisfy { satisfiesBase($0) }
        }
    }

    /// The base operator for one context value: positive → matches a policy value; negated → matches none.
    private func satisfiesBase(_ contextValue: String) -> Bool {
        conditionOperator.base.isNegated ? matchesNone(contextValue) : matchesAny(contextValue)
    }

    private func matchesAny(_ contextValue: String) -> Bool {
        values.contains { compare(contextValue, $0) == .match }
    }

    /// Every comparison must be a definite mismatch: an unparseable value makes the negated comparison false
    /// too, so a garbled number or address never satisfies a condition.
    private func matchesNone(_ contextValue: String) -> Bool {
        values.allSatisfy { compare(contextValue, $0) == .mismatch }
    }

    /// The positive form of the base operator (NotEquals compares as Equals; the caller negates).
    private func compare(_ contextValue: String, _ policyValue: String) -> Comparison {
        switch conditionOperator.base {
        case .stringEquals, .stringNotEquals:
            return Comparison(contextValue == policyValue)
        case .stringEqualsIgnoreCase, .stringNotEqualsIgnoreCase:
            return Comparison(contextValue.lowercased() == policyValue.lowercased())
        case .stringLike, .stringNotLike:
            return Comparison(globMatches(pattern: policyValue, contextValue))
        case .numericEquals, .numericNotEquals:
            return Comparison(ConditionValue.number(contextValue), ConditionValue.number(policyValue), ==)
        case .numericLessThan:
            return Comparison(ConditionValue.number(contextValue), ConditionValue.number(policyValue), <)
        case .numericLessThanEquals:
            return Comparison(ConditionValue.number(contextValue), ConditionValue.number(policyValue), <=)
        case .numericGreaterThan:
            return Comparison(ConditionValue.number(contextValue), ConditionValue.number(policyValue), >)
        case .numericGreaterThanEquals:
            return Comparison(ConditionValue.number(contextValue), ConditionValue.number(policyValue), >=)
        case .dateEquals, .dateNotEquals:
            return Comparison(ConditionValue.date(contextValue), ConditionValue.date(policyValue), ==)
        case .dateLessThan:
            return Comparison(ConditionValue.date(contextValue), ConditionValue.date(policyValue), <)
        case .dateLessThanEquals:
            return Comparison(ConditionValue.date(contextValue), ConditionValue.date(policyValue), <=)
        case .dateGreaterThan:
            return Comparison(ConditionValue.date(contextValue), ConditionValue.date(policyValue), >)
        case .dateGreaterThanEquals:
            return Comparison(ConditionValue.date(contextValue), ConditionValue.date(policyValue), >=)
        case .bool:
            return Comparison(ConditionValue.bool(contextValue), ConditionValue.bool(policyValue), ==)
        case .binaryEquals:
            return Comparison(ConditionValue.binary(contextValue), ConditionValue.binary(policyValue), ==)
        case .ipAddress, .notIpAddress:
            guard let address = IPNetwork(address: contextValue), let network = IPNetwork(cidr: policyValue) else { return .invalid }
            return Comparison(network.contains(address))
        case .arnEquals, .arnNotEquals, .arnLike, .arnNotLike:
            // IAM gives ArnEquals and ArnLike the same meaning: each of the six parts compared on its own,
            // case-sensitively, with `*` and `?` allowed in each.
            guard let arn = ARNParts(contextValue), let pattern = ARNParts(policyValue) else { return .invalid }
            return Comparison(zip(pattern.components, arn.components).allSatisfy { globMatches(pattern: $0, $1) })
        case .null:
            return .invalid  // handled before any comparison
        }
    }
}

/// The outcome of comparing one context value with one policy value.
private enum Comparison {
    case match, mismatch
    /// One side did not parse as the operator's type.
    case invalid

    init(_ matched: Bool) { self = matched ? .match : .mismatch }

    init<Value>(_ lhs: Value?, _ rhs: Value?, _ relation: (Value, Value) -> Bool) {
        guard let lhs, let rhs else {
            self = .invalid
            return
        }
        self.init(relation(lhs, rhs))
    }
}

// MARK: - Value parsing

/// Parsers for the typed operators. Each returns nil for text it does not accept, never traps.
enum ConditionValue {
    /// A decimal number ("42", "-1.5", "2e3"); no hex, infinity or NaN.
    static func number(_ text: String) -> Double? {
        guard !text.isEmpty, text.unicodeScalars.allSatisfy({ "0123456789+-.eE".unicodeScalars.contains($0) }),
            let value = Double(text), value.isFinite
        else { return nil }
        return value
    }

    /// Seconds since 1970: ISO 8601 ("2026-01-01T00:00:00Z", with optional fraction and offset, or just
    /// "2026-01-01", read as UTC) or epoch seconds.
    static func date(_ text: String) -> Double? {
        if let epoch = number(text) { return epoch }
        return ISO8601.seconds(Array(text.utf8))
    }

    static func bool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true": true
        case "false": false
        default: nil
        }
    }

    static func binary(_ text: String) -> Data? {
        Data(base64Encoded: text)
    }
}

/// A small ISO 8601 reader for the forms IAM accepts in date conditions. Written out rather than using
/// ISO8601DateFormatter, which is neither Sendable nor lenient about date-only values.
private enum ISO8601 {
    static func seconds(_ bytes: [UInt8]) -> Double? {
        var index = 0
        func digits(_ count: Int) -> Int? {
            guard bytes.count - index >= count else { return nil }
            var value = 0
            for _ in 0..<count {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
                index += 1
            }
            return value
        }
        func consume(_ character: Character) -> Bool {
            guard index < bytes.count, let ascii = character.asciiValue, bytes[index] == ascii else { return false }
            index += 1
            return true
        }

        guard let year = digits(4), consume("-"), let month = digits(2), consume("-"), let day = digits(2),
            (1...12).contains(month), (1...daysInMonth(month, year: year)).contains(day)
        else { return nil }
        var seconds = Double(daysFromCivil(year: year, month: month, day: day) * 86_400)
        if index == bytes.count { return seconds }

        guard consume("T") || consume("t"), let hour = digits(2), consume(":"), let minute = digits(2),
            (0...23).contains(hour), (0...59).contains(minute)
        else { return nil }
        var second = 0.0
        if consume(":") {
            guard let whole = digits(2), (0...60).contains(whole) else { return nil }
            second = Double(whole)
            if consume(".") || consume(",") {
                var scale = 0.1
                let start = index
                while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                    second += Double(bytes[index] - UInt8(ascii: "0")) * scale
                    scale /= 10
                    index += 1
                }
                guard index > start else { return nil }
            }
        }
        seconds += Double(hour * 3600 + minute * 60) + second

        if index == bytes.count || consume("Z") || consume("z") {
            return index == bytes.count ? seconds : nil
        }
        let sign: Double
        if consume("+") {
            sign = 1
        } else if consume("-") {
            sign = -1
        } else {
            return nil
        }
        guard let offsetHours = digits(2) else { return nil }
        _ = consume(":")
        guard let offsetMinutes = digits(2), offsetHours <= 23, offsetMinutes <= 59, index == bytes.count else { return nil }
        return seconds - sign * Double(offsetHours * 3600 + offsetMinutes * 60)
    }

    static func daysInMonth(_ month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

/// An IPv4 or IPv6 network: address bytes (4 or 16) and a prefix length.
struct IPNetwork: Equatable {
    var bytes: [UInt8]
    var prefixLength: Int

    /// A plain address, as a context value carries it.
    init?(address text: String) {
        guard let bytes = Self.parse(text) else { return nil }
        self.bytes = bytes
        self.prefixLength = bytes.count * 8
    }

    /// "10.0.0.0/8", "2001:db8::/32", or a plain address (a network of one).
    init?(cidr text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let bytes = Self.parse(String(parts[0])) else { return nil }
        var prefixLength = bytes.count * 8
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].count <= 3, parts[1].allSatisfy(\.isASCIIDecimalDigit), let length = Int(parts[1]),
                length <= prefixLength
            else { return nil }
            prefixLength = length
        }
        self.bytes = bytes
        self.prefixLength = prefixLength
    }

    /// Same family, and the first `prefixLength` bits agree.
    func contains(_ other: IPNetwork) -> Bool {
        guard other.bytes.count == bytes.count else { return false }
        var remaining = prefixLength
        for (mine, theirs) in zip(bytes, other.bytes) where remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xFF : ~(0xFF >> UInt8(remaining))
            guard mine & mask == theirs & mask else { return false }
            remaining -= 8
        }
        return true
    }

    private static func parse(_ text: String) -> [UInt8]? {
        text.contains(":") ? parseIPv6(text) : parseIPv4(Substring(text))
    }

    /// Dotted quad; each part 1–3 decimal digits, at most 255.
    private static func parseIPv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCIIDecimalDigit), let value = UInt8(part) else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    /// RFC 4291 text: eight groups of up to four hex digits, at most one `::`, an optional dotted-quad tail.
    private static func parseIPv6(_ text: String) -> [UInt8]? {
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        guard let head = groups(halves[0], isLast: halves.count == 1) else { return nil }
        var words = head
        if halves.count == 2 {
            guard let tail = groups(halves[1], isLast: true), head.count + tail.count <= 7 else { return nil }
            words += Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard words.count == 8 else { return nil }
        return words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }

    private static func groups(_ text: String, isLast: Bool) -> [UInt16]? {
        guard !text.isEmpty else { return [] }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        var words: [UInt16] = []
        for (offset, part) in parts.enumerated() {
            if isLast, offset == parts.count - 1, part.contains(".") {
                guard let quad = parseIPv4(part) else { return nil }
                words += [UInt16(quad[0]) << 8 | UInt16(quad[1]), UInt16(quad[2]) << 8 | UInt16(quad[3])]
                continue
            }
            guard (1...4).contains(part.count), part.allSatisfy(\.isASCIIHexDigit), let word = UInt16(part, radix: 16) else { return nil }
            words.append(word)
        }
        return words
    }
}

/// The six colon-separated parts of an ARN: `arn:partition:service:region:account:resource` (the resource
/// part may itself contain colons).
struct ARNParts: Equatable {
    var components: [Substring]

    init?(_ text: String) {
        let parts = text.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "arn" else { return nil }
        components = parts
    }

    var partition: Substring { components[1] }
    var service: Substring { components[2] }
    var account: String { String(components[4]) }
    var resource: Substring { components[5] }
}

/// `*` matches any run of characters (including none), `?` exactly one; everything else only itself.
/// The two-pointer algorithm with one backtrack point, so a pattern of many stars stays O(n·m), never exponential.
func globMatches(pattern: some StringProtocol, _ text: some StringProtocol) -> Bool {
    if pattern == "*" { return true }
    // ASCII on both sides, the usual case (ARNs, key ids): one byte is one character.
    if pattern.utf8.allSatisfy({ $0 < 0x80 }) && text.utf8.allSatisfy({ $0 < 0x80 }) {
        return globMatches(Array(pattern.utf8), Array(text.utf8), star: UInt8(ascii: "*"), any: UInt8(ascii: "?"))
    }
    return globMatches(Array(pattern), Array(text), star: "*", any: "?")
}

private func globMatches<Element: Equatable>(_ pattern: [Element], _ text: [Element], star starElement: Element, any: Element) -> Bool {
    var p = 0
    var t = 0
    var star: (pattern: Int, text: Int)?
    while t < text.count {
        if p < pattern.count, pattern[p] == starElement {
            star = (p, t)
            p += 1
        } else if p < pattern.count, pattern[p] == any || pattern[p] == text[t] {
            p += 1
            t += 1
        } else if let backtrack = star {
            // Let the last star swallow one more character and retry from there.
            star = (backtrack.pattern, backtrack.text + 1)
            p = backtrack.pattern + 1
            t = backtrack.text + 1
        } else {
            return false
        }
    }
    while p < pattern.count, pattern[p] == starElement { p += 1 }
    return p == pattern.count
}

extension Character {
    /// 0–9 only (`isNumber` would also accept other scripts' digits, which `Int(_:)` then refuses).
    fileprivate var isASCIIDecimalDigit: Bool { asciiValue.map { (0x30...0x39).contains($0) } ?? false }
    fileprivate var isASCIIHexDigit: Bool { isASCIIDecimalDigit || asciiValue.map { (0x41...0x46).contains($0 & 0xDF) } ?? false }
}
