/// Non-secret key-value pairs bound to a ciphertext as additional authenticated data.
public struct EncryptionContext: Sendable, Equatable {
    public var pairs: [String: String]

    public init(_ pairs: [String: String] = [:]) { self.pairs = pairs }

    public var isEmpty: Bool { pairs.isEmpty }

    /// The canonical encoding (the AWS Encryption SDK's): `u16 count`, then for each pair sorted by the UTF-8
    /// bytes of its key, `u16 keylen | key | u16 vallen | value`; an empty context is empty bytes. Lengths make
    /// `{"ab":"c"}` and `{"a":"bc"}` encode differently.
    ///
    /// Throws when a count or length does not fit its u16: such a context never passed ``validate(member:)``,
    /// so nothing was ever encrypted with it, and a request naming it is refused rather than encoded ambiguously.
    public func canonicalBytes() throws(KMSError) -> [UInt8] {
        guard !pairs.isEmpty else { return [] }
        let sorted = pairs.map { (Array($0.key.utf8), Array($0.value.utf8)) }.sorted { $0.0.lexicographicallyPrecedes($1.0) }
        func length(_ count: Int) throws(KMSError) -> UInt16 {
            guard let length = UInt16(exactly: count) else {
                throw KMSError.constraint("encryptionContext", "Encryption context must not exceed \(Self.maximumSize) bytes")
            }
            return length
        }
        var bytes: [UInt8] = []
        bytes.appendUInt16(try length(sorted.count))
        for (key, value) in sorted {
            bytes.appendUInt16(try length(key.count))
            bytes.append(contentsOf: key)
            bytes.appendUInt16(try length(value.count))
            bytes.append(contentsOf: value)
        }
        return bytes
    }

    /// AWS's limit on the keys and values of one context together, in bytes.
    static let maximumSize = 8192

    /// Bounds that make the canonical encoding well defined: each key and value fits a u16 length, and the
    /// whole context stays small (AWS limits it to 8 KB). Every operation that takes a context checks it first,
    /// decryption as much as encryption.
    func validate(member: String) throws(KMSError) {
        var total = 0
        for (key, value) in pairs {
            guard !key.isEmpty else {
                throw KMSError(.validation, "Encryption context keys must not be empty.")
            }
            total += key.utf8.count + value.utf8.count
        }
        guard total <= Self.maximumSize else {
            throw KMSError.constraint(member, "Encryption context must not exceed \(Self.maximumSize) bytes")
        }
    }
}

extension [UInt8] {
    mutating func appendUInt16(_ value: UInt16) {
        append(UInt8(value >> 8))
        append(UInt8(value & 0xFF))
    }

    mutating func appendUInt32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { append(UInt8((value >> UInt32(shift)) & 0xFF)) }
    }
}
