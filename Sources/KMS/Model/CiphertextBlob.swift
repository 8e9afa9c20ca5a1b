/// The ciphertext format, version 1:
/// `u8 version=1 | 16 bytes key id | u32 BE backing-key version | 12 bytes IV | ciphertext | 16 bytes tag`.
///
/// The blob names its key, so Decrypt needs no KeyId, and its backing-key version, so every ciphertext made
/// before a rotation or a nonce-budget rollover still decrypts. Version 2 is the same layout for a multi-Region
/// key: the 16 bytes are the id its related keys share, and the blob means the related key in the Region that
/// decrypts it (so a ciphertext made in one Region decrypts in another). Version 1 blobs are unchanged.
public struct CiphertextBlob: Sendable, Equatable {
    public static let formatVersion: UInt8 = 1
    /// The version of blobs made under multi-Region keys.
    public static let multiRegionFormatVersion: UInt8 = 2
    public static let headerLength = 1 + 16 + 4
    public static let ivLength = 12
    public static let tagLength = 16
    static let minimumLength = headerLength + ivLength + tagLength

    public var keyID: KeyID
    public var backingKeyVersion: UInt32
    public var iv: [UInt8]
    /// Ciphertext followed by the 16-byte GCM tag.
    public var sealed: [UInt8]

    public init(keyID: KeyID, backingKeyVersion: UInt32, iv: [UInt8], sealed: [UInt8]) {
        self.keyID = keyID
        self.backingKeyVersion = backingKeyVersion
        self.iv = iv
        self.sealed = sealed
    }

    /// Parses a blob; anything malformed is InvalidCiphertextException, as AWS answers it. A multi-Region key's
    /// blob names the related key in `region`.
    public init(parsing bytes: [UInt8], region: String) throws(KMSError) {
        guard bytes.count >= Self.minimumLength, bytes[0] == Self.formatVersion || bytes[0] == Self.multiRegionFormatVersion else {
            throw KMSError(.invalidCiphertext, "")
        }
        keyID = KeyID(bytes: bytes[1..<17], multiRegion: bytes[0] == Self.multiRegionFormatVersion ? region : nil)
        backingKeyVersion = bytes[17..<21].reduce(0) { $0 << 8 | UInt32($1) }
        iv = Array(bytes[21..<33])
        sealed = Array(bytes[33...])
    }

    /// The bytes authenticated ahead of the encryption context: version, key id and backing-key version.
    public static func header(keyID: KeyID, backingKeyVersion: UInt32) -> [UInt8] {
        var header: [UInt8] = [keyID.multiRegion == nil ? formatVersion : multiRegionFormatVersion]
        header.append(contentsOf: keyID.bytes)
        header.appendUInt32(backingKeyVersion)
        return header
    }

    /// AES-GCM additional data: the header, then the canonical encryption context.
    public static func additionalData(keyID: KeyID, backingKeyVersion: UInt32, context: EncryptionContext) throws(KMSError) -> [UInt8] {
        header(keyID: keyID, backingKeyVersion: backingKeyVersion) + (try context.canonicalBytes())
    }

    public var bytes: [UInt8] {
        Self.header(keyID: keyID, backingKeyVersion: backingKeyVersion) + iv + sealed
    }
}
