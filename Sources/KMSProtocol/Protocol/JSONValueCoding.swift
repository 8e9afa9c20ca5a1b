import Foundation
import KMS
import JSON

/// `Codable` over ``JSONValue``: a request body is parsed once (``JSONParser``), decoded from that tree into
/// the operation's input, and the same tree gives the audit record its request parameters; a response is
/// encoded into a tree that becomes both the response body and the record's response elements.
///
/// Decoding follows `JSONDecoder`'s rules and errors: no coercion between JSON kinds, integers must be exact,
/// failures are `DecodingError`s carrying the coding path. Dates encode as seconds since 1970 (AWS JSON 1.1).
enum JSONValueCoding {
    static func decode<Value: Decodable>(_ type: Value.Type, from json: JSONValue) throws -> Value {
        try Value(from: TreeDecoder(json, codingPath: []))
    }

    static func encode<Value: Encodable>(_ value: Value) throws -> JSONValue {
        let root = EncodingNode()
        try root.store(value, codingPath: [])
        return root.json
    }
}

// MARK: - Decoding

private struct TreeDecoder: Decoder {
    let json: JSONValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(_ json: JSONValue, codingPath: [any CodingKey]) {
        self.json = json
        self.codingPath = codingPath
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = json else { throw mismatch([String: JSONValue].self, json, codingPath) }
        return KeyedDecodingContainer(KeyedTreeContainer<Key>(members: members, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let items) = json else { throw mismatch([JSONValue].self, json, codingPath) }
        return UnkeyedTreeContainer(items: items, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleTreeContainer(json: json, codingPath: codingPath) }
}

private func mismatch(_ type: Any.Type, _ json: JSONValue, _ path: [any CodingKey]) -> DecodingError {
    let found: String
    switch json {
    case .null: return DecodingError.valueNotFound(type, .init(codingPath: path, debugDescription: "Found null."))
    case .bool: found = "a boolean"
    case .number: found = "a number"
    case .string: found = "a string"
    case .array: found = "an array"
    case .object: found = "an object"
    }
    return DecodingError.typeMismatch(type, .init(codingPath: path, debugDescription: "Found \(found)."))
}

/// The scalar decodings every container shares.
private enum Scalar {
    static func bool(_ json: JSONValue, _ path: [any CodingKey]) throws -> Bool {
        guard case .bool(let flag) = json else { throw mismatch(Bool.self, json, path) }
        return flag
    }

    static func string(_ json: JSONValue, _ path: [any CodingKey]) throws -> String {
        guard case .string(let text) = json else { throw mismatch(String.self, json, path) }
        return text
    }

    static func floatingPoint<F: BinaryFloatingPoint>(_ json: JSONValue, _ path: [any CodingKey]) throws -> F {
        guard case .number(let number) = json else { throw mismatch(F.self, json, path) }
        return F(number)
    }

    static func integer<I: FixedWidthInteger>(_ json: JSONValue, _ path: [any CodingKey]) throws -> I {
        guard case .number(let number) = json else { throw mismatch(I.self, json, path) }
        guard let integer = I(exactly: number) else {
            throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "Number \(number) is not an integer that fits in \(I.self)."))
        }
        return integer
    }

    static func decode<T: Decodable>(_ type: T.Type, _ json: JSONValue, _ path: [any CodingKey]) throws -> T {
        // The common scalars directly, without a decoder for them.
        if T.self == String.self, let value = try string(json, path) as? T { return value }
        if T.self == Int.self, let value = try integer(json, path) as Int as? T { return value }
        if T.self == Bool.self, let value = try bool(json, path) as? T { return value }
        return try T(from: TreeDecoder(json, codingPath: path))
    }
}

private struct KeyedTreeContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let members: [String: JSONValue]
    let codingPath: [any CodingKey]

    var allKeys: [Key] { members.keys.compactMap(Key.init(stringValue:)) }

    func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

    private func member(_ key: Key) throws -> JSONValue {
        guard let json = members[key.stringValue] else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "No member \"\(key.stringValue)\"."))
        }
        return json
    }

    func decodeNil(forKey key: Key) throws -> Bool { try member(key) == .null }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try Scalar.bool(member(key), codingPath + [key]) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try Scalar.string(member(key), codingPath + [key]) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try Scalar.floatingPoint(member(key), codingPath + [key]) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try Scalar.floatingPoint(member(key), codingPath + [key]) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try Scalar.integer(member(key), codingPath + [key]) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try Scalar.integer(member(key), codingPath + [key]) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try Scalar.decode(type, member(key), codingPath + [key]) }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try TreeDecoder(member(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try TreeDecoder(member(key), codingPath: codingPath + [key]).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { TreeDecoder(.object(members), codingPath: codingPath) }
    func superDecoder(forKey key: Key) throws -> any Decoder { TreeDecoder(members[key.stringValue] ?? .null, codingPath: codingPath + [key]) }
}

private struct UnkeyedTreeContainer: UnkeyedDecodingContainer {
    let items: [JSONValue]
    let codingPath: [any CodingKey]
    var currentIndex = 0

    init(items: [JSONValue], codingPath: [any CodingKey]) {
        self.items = items
        self.codingPath = codingPath
    }

    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    private struct Index: CodingKey {
        var intValue: Int?
        var stringValue: String { "\(intValue ?? 0)" }
        init(_ index: Int) { intValue = index }
        init?(stringValue: String) { nil }
        init?(intValue: Int) { self.intValue = intValue }
    }

    private mutating func next<T>(_ read: (JSONValue, [any CodingKey]) throws -> T) throws -> T {
        let path = codingPath + [Index(currentIndex)]
        guard !isAtEnd else { throw DecodingError.valueNotFound(T.self, .init(codingPath: path, debugDescription: "The array has ended.")) }
        let value = try read(items[currentIndex], path)
        currentIndex += 1
        return value
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, items[currentIndex] == .null else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try next(Scalar.bool) }
    mutating func decode(_ type: String.Type) throws -> String { try next(Scalar.string) }
    mutating func decode(_ type: Double.Type) throws -> Double { try next(Scalar.floatingPoint) }
    mutating func decode(_ type: Float.Type) throws -> Float { try next(Scalar.floatingPoint) }
    mutating func decode(_ type: Int.Type) throws -> Int { try next(Scalar.integer) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try next(Scalar.integer) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try next(Scalar.integer) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try next(Scalar.integer) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try next(Scalar.integer) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try next(Scalar.integer) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next(Scalar.integer) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next(Scalar.integer) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next(Scalar.integer) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next(Scalar.integer) }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next { try Scalar.decode(type, $0, $1) } }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next { try TreeDecoder($0, codingPath: $1).container(keyedBy: type) }
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try next { try TreeDecoder($0, codingPath: $1).unkeyedContainer() }
    }

    mutating func superDecoder() throws -> any Decoder { try next { TreeDecoder($0, codingPath: $1) } }
}

private struct SingleTreeContainer: SingleValueDecodingContainer {
    let json: JSONValue
    let codingPath: [any CodingKey]

    func decodeNil() -> Bool { json == .null }
    func decode(_ type: Bool.Type) throws -> Bool { try Scalar.bool(json, codingPath) }
    func decode(_ type: String.Type) throws -> String { try Scalar.string(json, codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try Scalar.floatingPoint(json, codingPath) }
    func decode(_ type: Float.Type) throws -> Float { try Scalar.floatingPoint(json, codingPath) }
    func decode(_ type: Int.Type) throws -> Int { try Scalar.integer(json, codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try Scalar.integer(json, codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try Scalar.integer(json, codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try Scalar.integer(json, codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try Scalar.integer(json, codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try Scalar.integer(json, codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try Scalar.integer(json, codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try Scalar.integer(json, codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try Scalar.integer(json, codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try Scalar.integer(json, codingPath) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try Scalar.decode(type, json, codingPath) }
}

// MARK: - Encoding

/// One value being encoded: containers write into their node after it was handed out, so nodes are shared
/// references until the tree is read back as a ``JSONValue``.
private final class EncodingNode {
    enum Content {
        case empty
        case value(JSONValue)
        case object([String: EncodingNode])
        case array([EncodingNode])
    }
    var content = Content.empty

    init(_ content: Content = .empty) { self.content = content }

    var json: JSONValue {
        switch content {
        case .empty: .object([:])
        case .value(let value): value
        case .object(let members): .object(members.mapValues(\.json))
        case .array(let items): .array(items.map(\.json))
        }
    }

    func store<T: Encodable>(_ value: T, codingPath: [any CodingKey]) throws {
        switch value {
        case let date as Date: content = .value(.number(date.timeIntervalSince1970))
        case let text as String: content = .value(.string(text))
        default: try value.encode(to: TreeEncoder(node: self, codingPath: codingPath))
        }
    }

    func set(_ key: String, _ child: EncodingNode) {
        guard case .object(var members) = content else {
            content = .object([key: child])
            return
        }
        content = .empty
        members[key] = child
        content = .object(members)
    }

    func append(_ child: EncodingNode) {
        guard case .array(var items) = content else {
            content = .array([child])
            return
        }
        content = .empty
        items.append(child)
        content = .array(items)
    }

    var count: Int {
        if case .array(let items) = content { return items.count }
        return 0
    }
}

private struct TreeEncoder: Encoder {
    let node: EncodingNode
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .object = node.content {} else { node.content = .object([:]) }
        return KeyedEncodingContainer(KeyedTreeEncodingContainer<Key>(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .array = node.content {} else { node.content = .array([]) }
        return UnkeyedTreeEncodingContainer(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { SingleTreeEncodingContainer(node: node, codingPath: codingPath) }
}

private struct KeyedTreeEncodingContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let node: EncodingNode
    let codingPath: [any CodingKey]

    func encodeNil(forKey key: Key) { node.set(key.stringValue, EncodingNode(.value(.null))) }
    func encode(_ value: Bool, forKey key: Key) { node.set(key.stringValue, EncodingNode(.value(.bool(value)))) }
    func encode(_ value: String, forKey key: Key) { node.set(key.stringValue, EncodingNode(.value(.string(value)))) }
    func encode(_ value: Double, forKey key: Key) { node.set(key.stringValue, EncodingNode(.value(.number(value)))) }
    func encode(_ value: Int, forKey key: Key) { node.set(key.stringValue, EncodingNode(.value(.number(Double(value))))) }

    func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        let child = EncodingNode()
        try child.store(value, codingPath: codingPath + [key])
        node.set(key.stringValue, child)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let child = EncodingNode(.object([:]))
        node.set(key.stringValue, child)
        return TreeEncoder(node: child, codingPath: codingPath + [key]).container(keyedBy: keyType)
    }

    func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = EncodingNode(.array([]))
        node.set(key.stringValue, child)
        return TreeEncoder(node: child, codingPath: codingPath + [key]).unkeyedContainer()
    }

    func superEncoder() -> any Encoder { TreeEncoder(node: node, codingPath: codingPath) }

    func superEncoder(forKey key: Key) -> any Encoder {
        let child = EncodingNode()
        node.set(key.stringValue, child)
        return TreeEncoder(node: child, codingPath: codingPath + [key])
    }
}

private struct UnkeyedTreeEncodingContainer: UnkeyedEncodingContainer {
    let node: EncodingNode
    let codingPath: [any CodingKey]
    var count: Int { node.count }

    func encodeNil() { node.append(EncodingNode(.value(.null))) }
    func encode(_ value: Bool) { node.append(EncodingNode(.value(.bool(value)))) }
    func encode(_ value: String) { node.append(EncodingNode(.value(.string(value)))) }
    func encode(_ value: Double) { node.append(EncodingNode(.value(.number(value)))) }
    func encode(_ value: Int) { node.append(EncodingNode(.value(.number(Double(value))))) }

    func encode<T: Encodable>(_ value: T) throws {
        let child = EncodingNode()
        try child.store(value, codingPath: codingPath)
        node.append(child)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let child = EncodingNode(.object([:]))
        node.append(child)
        return TreeEncoder(node: child, codingPath: codingPath).container(keyedBy: keyType)
    }

    func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let child = EncodingNode(.array([]))
        node.append(child)
        return TreeEncoder(node: child, codingPath: codingPath).unkeyedContainer()
    }

    func superEncoder() -> any Encoder {
        let child = EncodingNode()
        node.append(child)
        return TreeEncoder(node: child, codingPath: codingPath)
    }
}

private struct SingleTreeEncodingContainer: SingleValueEncodingContainer {
    let node: EncodingNode
    let codingPath: [any CodingKey]

    func encodeNil() { node.content = .value(.null) }
    func encode(_ value: Bool) { node.content = .value(.bool(value)) }
    func encode(_ value: String) { node.content = .value(.string(value)) }
    func encode(_ value: Double) { node.content = .value(.number(value)) }
    func encode(_ value: Float) { node.content = .value(.number(Double(value))) }
    func encode(_ value: Int) { node.content = .value(.number(Double(value))) }
    func encode(_ value: Int8) { node.content = .value(.number(Double(value))) }
    func encode(_ value: Int16) { node.content = .value(.number(Double(value))) }
    func encode(_ value: Int32) { node.content = .value(.number(Double(value))) }
    func encode(_ value: Int64) { node.content = .value(.number(Double(value))) }
    func encode(_ value: UInt) { node.content = .value(.number(Double(value))) }
    func encode(_ value: UInt8) { node.content = .value(.number(Double(value))) }
    func encode(_ value: UInt16) { node.content = .value(.number(Double(value))) }
    func encode(_ value: UInt32) { node.content = .value(.number(Double(value))) }
    func encode(_ value: UInt64) { node.content = .value(.number(Double(value))) }
    func encode<T: Encodable>(_ value: T) throws { try node.store(value, codingPath: codingPath) }
}
