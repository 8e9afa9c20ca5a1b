private let lowercaseHexDigits = Array("0123456789abcdef".utf8)

extension Sequence<UInt8> {
    /// Lowercase hexadecimal, two digits per byte: SigV4 hashes and signatures, the audit chain, grant ids.
    public var hexString: String {
        var characters: [UInt8] = []
        characters.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            characters.append(lowercaseHexDigits[Int(byte >> 4)])
            characters.append(lowercaseHexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: characters, as: UTF8.self)
    }
}
