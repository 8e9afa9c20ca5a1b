/// The little DER Trent needs for public keys (SubjectPublicKeyInfo), private keys (PKCS#8), ECDSA
/// signatures and PKCS#1 DigestInfo: a writer, and a strict reader that refuses anything not in
/// distinguished encoding (long-form lengths that fit short form, trailing bytes, negative integers).
enum DER {
    enum Tag: UInt8 {
        case integer = 0x02, bitString = 0x03, octetString = 0x04, null = 0x05, objectIdentifier = 0x06, sequence = 0x30
        /// `[1] EXPLICIT`, as ECPrivateKey tags its public key.
        case contextConstructed1 = 0xA1
    }

    struct Malformed: Error {}

    // MARK: Writing

    static func encode(_ tag: Tag, _ content: [UInt8]) -> [UInt8] {
        [tag.rawValue] + length(content.count) + content
    }

    static func sequence(_ elements: [UInt8]...) -> [UInt8] { encode(.sequence, elements.flatMap { $0 }) }

    /// A non-negative INTEGER from unsigned big-endian bytes (leading zeros dropped, a zero added when the top bit is set).
    static func unsignedInteger(_ magnitude: [UInt8]) -> [UInt8] {
        var bytes = Array(magnitude.drop(while: { $0 == 0 }))
        if bytes.isEmpty || bytes[0] & 0x80 != 0 { bytes.insert(0, at: 0) }
        return encode(.integer, bytes)
    }

    static func smallInteger(_ value: UInt8) -> [UInt8] { encode(.integer, [value]) }

    static func bitString(_ bytes: [UInt8]) -> [UInt8] { encode(.bitString, [0] + bytes) }

    static let null: [UInt8] = [Tag.null.rawValue, 0]

    private static func length(_ count: Int) -> [UInt8] {
        if count < 0x80 { return [UInt8(count)] }
        var bytes: [UInt8] = []
        var rest = count
        while rest > 0 {
            bytes.insert(UInt8(rest & 0xFF), at: 0)
            rest >>= 8
        }
        return [0x80 | UInt8(bytes.count)] + bytes
    }

    // MARK: Reading

    /// Reads consecutive TLVs out of a byte string.
    struct Reader {
        private var bytes: ArraySlice<UInt8>

        init(_ bytes: some Collection<UInt8>) { self.bytes = ArraySlice(bytes) }

        var isAtEnd: Bool { bytes.isEmpty }

        /// The content of the next element, which must carry `tag`.
        mutating func read(_ tag: Tag) throws(Malformed) -> ArraySlice<UInt8> {
            guard let first = bytes.first, first == tag.rawValue else { throw Malformed() }
            bytes = bytes.dropFirst()
            guard let lengthByte = bytes.first else { throw Malformed() }
            bytes = bytes.dropFirst()
            var length = Int(lengthByte)
            if lengthByte & 0x80 != 0 {
                let count = Int(lengthByte & 0x7F)
                guard (1...3).contains(count), bytes.count >= count, bytes.first != 0 else { throw Malformed() }
                length = bytes.prefix(count).reduce(0) { $0 << 8 | Int($1) }
                bytes = bytes.dropFirst(count)
                guard length >= 0x80 else { throw Malformed() }
            }
            guard bytes.count >= length else { throw Malformed() }
            defer { bytes = bytes.dropFirst(length) }
            return bytes.prefix(length)
        }

        /// A non-negative INTEGER's magnitude, without sign padding.
        mutating func readUnsignedInteger() throws(Malformed) -> [UInt8] {
            let content = try read(.integer)
            guard let first = content.first, first & 0x80 == 0 else { throw Malformed() }
            if first == 0, content.count > 1, content[content.startIndex + 1] & 0x80 == 0 { throw Malformed() }
            return Array(content.drop(while: { $0 == 0 }))
        }

        func requireEnd() throws(Malformed) {
            guard bytes.isEmpty else { throw Malformed() }
        }
    }

    /// Parses `bytes` as exactly one element carrying `tag` and returns a reader over its content.
    static func single(_ tag: Tag, in bytes: some Collection<UInt8>) throws(Malformed) -> Reader {
        var outer = Reader(bytes)
        let content = try outer.read(tag)
        try outer.requireEnd()
        return Reader(content)
    }
}
