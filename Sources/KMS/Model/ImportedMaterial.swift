// The vocabulary of imported key material: expiration models, wrapping algorithms, wrapping keys.

/// Whether imported key material expires, spelled as the API spells it.
public enum ExpirationModel: String, Sendable, Codable, CaseIterable {
    case expires = "KEY_MATERIAL_EXPIRES"
    case doesNotExpire = "KEY_MATERIAL_DOES_NOT_EXPIRE"
}

/// How key material to import is encrypted to the wrapping key GetParametersForImport returned.
public enum WrappingAlgorithm: String, Sendable, Codable, CaseIterable {
    case rsaesPKCS1 = "RSAES_PKCS1_V1_5"
    case oaepSHA1 = "RSAES_OAEP_SHA_1"
    case oaepSHA256 = "RSAES_OAEP_SHA_256"
    /// OAEP of an ephemeral AES-256 key, then RFC 5649 of the material under it.
    case rsaAESKeyWrapSHA1 = "RSA_AES_KEY_WRAP_SHA_1"
    case rsaAESKeyWrapSHA256 = "RSA_AES_KEY_WRAP_SHA_256"
    case sm2PKE = "SM2PKE"

    /// The OAEP hash of the RSA step; nil for the algorithms Trent does not take.
    public var oaepDigest: DigestAlgorithm? {
        switch self {
        case .oaepSHA1, .rsaAESKeyWrapSHA1: .sha1
        case .oaepSHA256, .rsaAESKeyWrapSHA256: .sha256
        case .rsaesPKCS1, .sm2PKE: nil
        }
    }

    public var wrapsWithAES: Bool { self == .rsaAESKeyWrapSHA1 || self == .rsaAESKeyWrapSHA256 }
}

/// The RSA key an import is encrypted to: its private key wrapped under the domain key, its public key in the clear.
public struct ImportWrappingKey: Sendable, Equatable {
    public var spec: KeyPairSpec
    public var wrappedPrivateKey: [UInt8]
    public var publicKey: [UInt8]

    public init(spec: KeyPairSpec, wrappedPrivateKey: [UInt8], publicKey: [UInt8]) {
        self.spec = spec
        self.wrappedPrivateKey = wrappedPrivateKey
        self.publicKey = publicKey
    }
}

/// Whether ImportKeyMaterial brings material the key has had before or new material (symmetric encryption keys:
/// staged for an on-demand rotation), spelled as the API spells it.
public enum ImportType: String, Sendable, CaseIterable {
    case newKeyMaterial = "NEW_KEY_MATERIAL"
    case existingKeyMaterial = "EXISTING_KEY_MATERIAL"
}
