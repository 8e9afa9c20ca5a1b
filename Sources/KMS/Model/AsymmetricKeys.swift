// The vocabulary of asymmetric keys: key pair specs, signing and RSA encryption algorithms.

/// The asymmetric key pairs Trent makes, for KMS keys and for GenerateDataKeyPair (whose KeyPairSpec uses
/// the same names).
public enum KeyPairSpec: String, Sendable, Codable, CaseIterable {
    case rsa2048 = "RSA_2048", rsa3072 = "RSA_3072", rsa4096 = "RSA_4096"
    case eccNistP256 = "ECC_NIST_P256", eccNistP384 = "ECC_NIST_P384", eccNistP521 = "ECC_NIST_P521"
    case eccSecgP256k1 = "ECC_SECG_P256K1"

    public var isRSA: Bool { rsaModulusBits != nil }

    public var rsaModulusBits: Int? {
        switch self {
        case .rsa2048: 2048
        case .rsa3072: 3072
        case .rsa4096: 4096
        default: nil
        }
    }

    /// The key usages AWS allows for the spec (secp256k1 signs only).
    public var keyUsages: [KeyUsage] {
        switch self {
        case .rsa2048, .rsa3072, .rsa4096: [.encryptDecrypt, .signVerify]
        case .eccNistP256, .eccNistP384, .eccNistP521: [.signVerify, .keyAgreement]
        case .eccSecgP256k1: [.signVerify]
        }
    }

    /// The signing algorithms AWS lists for the spec.
    public var signingAlgorithms: [SigningAlgorithm] {
        switch self {
        case .rsa2048, .rsa3072, .rsa4096:
            [.rsassaPKCS1SHA256, .rsassaPKCS1SHA384, .rsassaPKCS1SHA512, .rsassaPSSSHA256, .rsassaPSSSHA384, .rsassaPSSSHA512]
        case .eccNistP256, .eccSecgP256k1: [.ecdsaSHA256]
        case .eccNistP384: [.ecdsaSHA384]
        case .eccNistP521: [.ecdsaSHA512]
        }
    }
}

/// The hash functions of signing and encryption algorithms.
public enum DigestAlgorithm: Sendable, Hashable {
    case sha1, sha256, sha384, sha512

    public var length: Int {
        switch self {
        case .sha1: 20
        case .sha256: 32
        case .sha384: 48
        case .sha512: 64
        }
    }
}

/// Signing algorithms, spelled as the API spells them.
public enum SigningAlgorithm: String, Sendable, Codable, CaseIterable {
    case rsassaPSSSHA256 = "RSASSA_PSS_SHA_256", rsassaPSSSHA384 = "RSASSA_PSS_SHA_384", rsassaPSSSHA512 = "RSASSA_PSS_SHA_512"
    case rsassaPKCS1SHA256 = "RSASSA_PKCS1_V1_5_SHA_256", rsassaPKCS1SHA384 = "RSASSA_PKCS1_V1_5_SHA_384"
    case rsassaPKCS1SHA512 = "RSASSA_PKCS1_V1_5_SHA_512"
    case ecdsaSHA256 = "ECDSA_SHA_256", ecdsaSHA384 = "ECDSA_SHA_384", ecdsaSHA512 = "ECDSA_SHA_512"
    /// Listed so requests naming them get InvalidKeyUsageException rather than a validation error: Trent has
    /// no SM2, ML-DSA or Ed25519 keys (``KeyProvider/unavailability(of:)`` says why for Ed25519).
    case sm2DSA = "SM2DSA", mlDSAShake256 = "ML_DSA_SHAKE_256"
    case ed25519SHA512 = "ED25519_SHA_512", ed25519PHSHA512 = "ED25519_PH_SHA_512"

    public enum Scheme: Sendable { case pss, pkcs1v15, ecdsa, unsupported }

    public var scheme: Scheme {
        switch self {
        case .rsassaPSSSHA256, .rsassaPSSSHA384, .rsassaPSSSHA512: .pss
        case .rsassaPKCS1SHA256, .rsassaPKCS1SHA384, .rsassaPKCS1SHA512: .pkcs1v15
        case .ecdsaSHA256, .ecdsaSHA384, .ecdsaSHA512: .ecdsa
        case .sm2DSA, .mlDSAShake256, .ed25519SHA512, .ed25519PHSHA512: .unsupported
        }
    }

    public var digest: DigestAlgorithm {
        switch self {
        case .rsassaPSSSHA256, .rsassaPKCS1SHA256, .ecdsaSHA256, .sm2DSA, .mlDSAShake256: .sha256
        case .rsassaPSSSHA384, .rsassaPKCS1SHA384, .ecdsaSHA384: .sha384
        case .rsassaPSSSHA512, .rsassaPKCS1SHA512, .ecdsaSHA512, .ed25519SHA512, .ed25519PHSHA512: .sha512
        }
    }
}

/// How Sign and Verify treat the message: hash it once (`RAW`) or take it as the digest (`DIGEST`).
public enum MessageType: String, Sendable, Codable, CaseIterable {
    case raw = "RAW"
    case digest = "DIGEST"
    /// ML-DSA's external mu; listed so it is refused as AWS refuses it for other keys.
    case externalMu = "EXTERNAL_MU"
}

/// RSA encryption algorithms (RSAES-OAEP with MGF1 of the same hash, no label).
public enum RSAEncryptionAlgorithm: String, Sendable, CaseIterable {
    case oaepSHA1 = "RSAES_OAEP_SHA_1"
    case oaepSHA256 = "RSAES_OAEP_SHA_256"

    public var digest: DigestAlgorithm { self == .oaepSHA1 ? .sha1 : .sha256 }

    /// The longest plaintext OAEP can encrypt under a modulus of `bits`.
    public func maximumPlaintextLength(modulusBits bits: Int) -> Int { bits / 8 - 2 * digest.length - 2 }
}
