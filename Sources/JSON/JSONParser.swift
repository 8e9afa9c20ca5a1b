/// A value a ``JSONParser`` can build: each kind of tree (the wire's ``JSONValue``, the policy grammar's
/// ordered form) says how it is made from the parts the parser found.
public protocol JSONTree {
    static var jsonNull: Self { get }
    init(jsonBool: Bool)
    init(jsonString: String)
    /// `text` matches RFC 8259's number grammar; throwing refuses a number the tree cannot hold.
    init(jsonNumber text: String) throws(JSONSyntaxError)
    init(jsonArray: [Self])
    /// The members in document order; names are unique when the parser was asked to refuse duplicates.
    init(jsonObject: [(key: String, value: Self)])
}

/// Why a document is not JSON, and where.
public struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    /// Byte offset of the problem in the document.
    public var offset: Int

    public var description: String { "\(reason) at offset \(offset)" }
}

/// A strict recursive-descent RFC 8259 parser over UTF-8 bytes: the one JSON reader for request bodies,
/// policies and audit lines.
///
/// Strings must be valid UTF-8 (a lone surrogate escape is refused), numbers follow the grammar exactly,
/// and nesting is limited so that hostile input cannot exhaust the stack.
public struct JSONParser {
    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0
    private let maximumDepth: Int
    private let refusingDuplicateNames: Bool

    /// Parses one JSON document (whitespace around it allowed, nothing else).
    public static func parse<Tree: JSONTree>(
        _ bytes: [UInt8], as: Tree.Type = Tree.self, maximumDepth: Int = 64, refusingDuplicateNames: Bool = false
    ) throws(JSONSyntaxError) -> Tree {
        var parser = JSONParser(bytes: bytes, maximumDepth: maximumDepth, refusingDuplicateNames: refusingDuplicateNames)
        parser.skipWhitespace()
        let value: Tree = try parser.value()
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.failure("unexpected text after the end of the document") }
        return value
    }

    private init(bytes: [UInt8], maximumDepth: Int, refusingDuplicateNames: Bool) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
        self.refusingDuplicateNames = refusingDuplicateNames
    }

    private func failure(_ reason: String) -> JSONSyntaxError { JSONSyntaxError(reason: reason, offset: index) }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func value<Tree: JSONTree>() throws(JSONSyntaxError) -> Tree {
        guard index < bytes.count else { throw failure("unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return Tree(jsonString: try string())
        case UInt8(ascii: "t"): try literal("true"); return Tree(jsonBool: true)
        case UInt8(ascii: "f"): try literal("false"); return Tree(jsonBool: false)
        case UInt8(ascii: "n"): try literal("null"); return Tree.jsonNull
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = index
            let text = try number()
            do {
                return try Tree(jsonNumber: text)
            } catch {
                throw JSONSyntaxError(reason: error.reason, offset: start)
            }
        default: throw failure("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count else { throw failure("unexpected character") }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
            throw failure("unexpected character")
        }
        index += count
    }

    private mutating func enter() throws(JSONSyntaxError) {
        depth += 1
        guard depth <= maximumDepth else { throw failure("nesting deeper than \(maximumDepth) levels") }
        index += 1
    }

    private mutating func object<Tree: JSONTree>() throws(JSONSyntaxError) -> Tree {
        try enter()
        defer { depth -= 1 }
        var members: [(key: String, value: Tree)] = []
        var names: Set<String> = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return Tree(jsonObject: members)
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw failure("expected a member name") }
            let nameOffset = index
            let key = try string()
            if refusingDuplicateNames, !names.insert(key).inserted {
                throw JSONSyntaxError(reason: "duplicate member name \"\(key)\"", offset: nameOffset)
            }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw failure("expected ':'") }
            index += 1
            skipWhitespace()
            members.append((key, try value()))
            skipWhitespace()
            guard index < bytes.count else { throw failure("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            guard bytes[index] == UInt8(ascii: "}") else { throw failure("expected ',' or '}'") }
            index += 1
            return Tree(jsonObject: members)
        }
    }

    private mutating func array<Tree: JSONTree>() throws(JSONSyntaxError) -> Tree {
        try enter()
        defer { depth -= 1 }
        var items: [Tree] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return Tree(jsonArray: items)
        }
        while true {
            skipWhitespace()
            items.append(try value())
            skipWhitespace()
            guard index < bytes.count else { throw failure("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            guard bytes[index] == UInt8(ascii: "]") else { throw failure("expected ',' or ']'") }
            index += 1
            return Tree(jsonArray: items)
        }
    }

    /// The text of a number, checked against the RFC 8259 grammar.
    private mutating func number() throws(JSONSyntaxError) -> String {
        let start = index
        func isDigit(_ at: Int) -> Bool { at < bytes.count && bytes[at] >= UInt8(ascii: "0") && bytes[at] <= UInt8(ascii: "9") }
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard isDigit(index) else { throw failure("invalid number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            while isDigit(index) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard isDigit(index) else { throw failure("invalid number") }
            while isDigit(index) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard isDigit(index) else { throw failure("invalid number") }
            while isDigit(index) { index += 1 }
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    /// A string (at its opening quote). Strings without escapes, the usual case, are copied in one go.
    private mutating func string() throws(JSONSyntaxError) -> String {
        index += 1
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = try utf8String(bytes[start..<index], at: start)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { break }
            index += 1
        }
        var buffer = Array(bytes[start..<index])
        while true {
            guard index < bytes.count else { throw failure("unterminated string") }
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return try utf8String(buffer[...], at: start)
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { throw failure("unterminated string") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): buffer.append(escape)
                case UInt8(ascii: "b"): buffer.append(0x08)
                case UInt8(ascii: "f"): buffer.append(0x0C)
                case UInt8(ascii: "n"): buffer.append(0x0A)
                case UInt8(ascii: "r"): buffer.append(0x0D)
                case UInt8(ascii: "t"): buffer.append(0x09)
                case UInt8(ascii: "u"): buffer.append(contentsOf: try unicodeEscape())
                default:
                    index -= 2
                    throw failure("invalid escape sequence")
                }
            case 0x00..<0x20:
                index -= 1
                throw failure("unescaped control character in a string")
            default:
                buffer.append(byte)
            }
        }
    }

    private func utf8String(_ slice: ArraySlice<UInt8>, at offset: Int) throws(JSONSyntaxError) -> String {
        guard let text = String(validating: slice, as: UTF8.self) else {
            throw JSONSyntaxError(reason: "a string is not valid UTF-8", offset: offset)
        }
        return text
    }

    /// `\uXXXX` (the `\u` already consumed), joining a surrogate pair; a lone surrogate is refused.
    private mutating func unicodeEscape() throws(JSONSyntaxError) -> [UInt8] {
        let first = try hex4()
        var scalarValue = UInt32(first)
        if (0xD800..<0xDC00).contains(first) {
            guard bytes.count - index >= 2, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                throw failure("unpaired surrogate in a \\u escape")
            }
            index += 2
            let second = try hex4()
            guard (0xDC00..<0xE000).contains(second) else { throw failure("unpaired surrogate in a \\u escape") }
            scalarValue = 0x10000 + ((UInt32(first) - 0xD800) << 10) + (UInt32(second) - 0xDC00)
        }
        guard let scalar = Unicode.Scalar(scalarValue) else { throw failure("unpaired surrogate in a \\u escape") }
        return Array(String(Character(scalar)).utf8)
    }

    private mutating func hex4() throws(JSONSyntaxError) -> UInt16 {
        guard bytes.count - index >= 4 else { throw failure("invalid \\u escape") }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("invalid \\u escape")
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }
}
