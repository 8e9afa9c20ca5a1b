internal import CPKCS11

/// A `CKM_*` mechanism code. Codes that differ between tokens (which code means RFC 5649 key wrap, say)
/// come from the HSM profile, not from constants here.
public struct MechanismType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let aesKeyGen = MechanismType(rawValue: UInt(CKM_AES_KEY_GEN))
    public static let aesGCM = MechanismType(rawValue: UInt(CKM_AES_GCM))
    public static let aesKeyWrap = MechanismType(rawValue: UInt(CKM_AES_KEY_WRAP))
    public static let aesKeyWrapPad = MechanismType(rawValue: UInt(CKM_AES_KEY_WRAP_PAD))

    public static let aesECB = MechanismType(rawValue: UInt(CKM_AES_ECB))
    public static let genericSecretKeyGen = MechanismType(rawValue: UInt(CKM_GENERIC_SECRET_KEY_GEN))
    public static let sha224HMAC = MechanismType(rawValue: UInt(CKM_SHA224_HMAC))
    public static let sha256HMAC = MechanismType(rawValue: UInt(CKM_SHA256_HMAC))
    public static let sha384HMAC = MechanismType(rawValue: UInt(CKM_SHA384_HMAC))
    public static let sha512HMAC = MechanismType(rawValue: UInt(CKM_SHA512_HMAC))
    public static let aesKeyWrapKWP = MechanismType(rawValue: 0x210B)  // PKCS#11 3.0; absent from p11-kit 0.24's header

    public static let rsaKeyPairGen = MechanismType(rawValue: UInt(CKM_RSA_PKCS_KEY_PAIR_GEN))
    public static let rsaPKCS = MechanismType(rawValue: UInt(CKM_RSA_PKCS))
    public static let rsaPKCSPSS = MechanismType(rawValue: UInt(CKM_RSA_PKCS_PSS))
    public static let rsaPKCSOAEP = MechanismType(rawValue: UInt(CKM_RSA_PKCS_OAEP))
    public static let rsaX509 = MechanismType(rawValue: UInt(CKM_RSA_X_509))
    public static let ecKeyPairGen = MechanismType(rawValue: UInt(CKM_EC_KEY_PAIR_GEN))
    public static let ecdsa = MechanismType(rawValue: UInt(CKM_ECDSA))
    public static let ecdh1Derive = MechanismType(rawValue: UInt(CKM_ECDH1_DERIVE))

    public var description: String { name }
}

/// How a token does AES-GCM, which differs between tokens (HSM-profile data).
public struct GCMConvention: Sendable, Hashable {
    public enum IVSource: String, Sendable, Codable {
        /// The caller supplies a random IV (SoftHSM, NSS softoken).
        case caller
        /// The caller passes a zeroed IV buffer and the token writes the IV it chose into it (CloudHSM, nShield).
        case tokenFillsBuffer = "token-fills-buffer"
        /// The caller passes no IV; the token chooses one and appends it to the output, ciphertext || tag || IV (Luna).
        case tokenAppends = "token-appends"
    }

    public enum ParameterLayout: String, Sendable, Codable {
        /// PKCS#11 2.40 errata / 3.0: `{pIv, ulIvLen, ulIvBits, pAAD, ulAADLen, ulTagBits}`, 48 bytes on 64-bit.
        case withIVBits = "with-iv-bits"
        /// The original 2.40 header: `{pIv, ulIvLen, pAAD, ulAADLen, ulTagBits}`, 40 bytes.
        case withoutIVBits = "without-iv-bits"
    }

    public var ivSource: IVSource
    public var parameterLayout: ParameterLayout

    public init(ivSource: IVSource = .caller, parameterLayout: ParameterLayout = .withIVBits) {
        self.ivSource = ivSource
        self.parameterLayout = parameterLayout
    }
}

/// The hash functions RSA-PSS and RSA-OAEP are parameterised with (the hash and its MGF1 together).
public enum HashFunction: Sendable, Hashable, CaseIterable {
    case sha1, sha256, sha384, sha512

    /// Digest length in bytes; also the PSS salt length Trent uses, as AWS KMS does.
    public var digestLength: Int {
        switch self {
        case .sha1: 20
        case .sha256: 32
        case .sha384: 48
        case .sha512: 64
        }
    }

    var mechanism: CK_MECHANISM_TYPE {
        switch self {
        case .sha1: CK_MECHANISM_TYPE(CKM_SHA_1)
        case .sha256: CK_MECHANISM_TYPE(CKM_SHA256)
        case .sha384: CK_MECHANISM_TYPE(CKM_SHA384)
        case .sha512: CK_MECHANISM_TYPE(CKM_SHA512)
        }
    }

    var mgf1: CK_RSA_PKCS_MGF_TYPE {
        switch self {
        case .sha1: CK_RSA_PKCS_MGF_TYPE(CKG_MGF1_SHA1)
        case .sha256: CK_RSA_PKCS_MGF_TYPE(CKG_MGF1_SHA256)
        case .sha384: CK_RSA_PKCS_MGF_TYPE(CKG_MGF1_SHA384)
        case .sha512: CK_RSA_PKCS_MGF_TYPE(CKG_MGF1_SHA512)
        }
    }
}

/// A mechanism with its parameters, checked before it reaches the token.
public enum Mechanism: Sendable {
    case aesKeyGen
    /// Generic secrets (HMAC keys), of the length `CKA_VALUE_LEN` gives.
    case genericSecretKeyGen
    /// AES-GCM. The IV must be 12 bytes and the tag 96 to 128 bits: SoftHSM accepts an empty IV (same
    /// keystream every time) and a 0-bit tag (no authentication at all), so the binding refuses both.
    case aesGCM(iv: [UInt8], additionalData: [UInt8], tagBits: Int = 128)
    /// RFC 3394 key wrap (no parameter).
    case aesKeyWrap
    /// A parameterless key-wrap mechanism by code (RFC 5649's code is token-specific).
    case keyWrap(MechanismType)
    /// An HMAC mechanism (`CKM_SHA256_HMAC`, ...): parameterless.
    case hmac(MechanismType)
    /// RSA key pairs; the template gives `CKA_MODULUS_BITS` and `CKA_PUBLIC_EXPONENT`.
    case rsaKeyPairGen
    /// EC key pairs; the public template gives the curve as `CKA_EC_PARAMS`.
    case ecKeyPairGen
    /// RSASSA-PKCS1-v1_5 over a DigestInfo the caller builds (the token adds only the padding).
    case rsaPKCS
    /// RSASSA-PSS over a digest the caller computed, with MGF1 of the same hash and a salt as long as the digest.
    case rsaPSS(HashFunction)
    /// RSAES-OAEP with MGF1 of the same hash and no label.
    case rsaOAEP(HashFunction)
    /// Raw RSA (`CKM_RSA_X_509`): the modular exponentiation alone, for padding done on the host.
    case rsaRaw
    /// ECDSA over a digest the caller computed; the token returns `r || s`.
    case ecdsa
    /// ECDH with no KDF: derives the raw shared secret with the peer's uncompressed public point.
    case ecdh(peerPoint: [UInt8])

    public static let gcmIVLength = 12
    public static let gcmTagLength = 16

    var type: MechanismType {
        switch self {
        case .aesKeyGen: .aesKeyGen
        case .genericSecretKeyGen: .genericSecretKeyGen
        case .aesGCM: .aesGCM
        case .aesKeyWrap: .aesKeyWrap
        case .keyWrap(let type), .hmac(let type): type
        case .rsaKeyPairGen: .rsaKeyPairGen
        case .ecKeyPairGen: .ecKeyPairGen
        case .rsaPKCS: .rsaPKCS
        case .rsaPSS: .rsaPKCSPSS
        case .rsaOAEP: .rsaPKCSOAEP
        case .rsaRaw: .rsaX509
        case .ecdsa: .ecdsa
        case .ecdh: .ecdh1Derive
        }
    }

    /// Pins the parameters for the duration of one Cryptoki call.
    func withCMechanism<R>(
        for function: PKCS11Error.Function, layout: GCMConvention.ParameterLayout = .withIVBits,
        _ body: (UnsafeMutablePointer<CK_MECHANISM>) throws(PKCS11Error) -> R
    ) throws(PKCS11Error) -> R {
        switch self {
        case .aesKeyGen, .genericSecretKeyGen, .aesKeyWrap, .keyWrap, .hmac, .rsaKeyPairGen, .ecKeyPairGen, .rsaPKCS, .rsaRaw, .ecdsa:
            var mechanism = CK_MECHANISM(mechanism: CK_MECHANISM_TYPE(type.rawValue), pParameter: nil, ulParameterLen: 0)
            return try body(&mechanism)
        case .aesGCM(let iv, let additionalData, let tagBits):
            guard iv.count == Self.gcmIVLength else {
                throw PKCS11Error(.argumentsBad, in: function, detail: "AES-GCM needs a \(Self.gcmIVLength)-byte IV, got \(iv.count) bytes")
            }
            guard (96...128).contains(tagBits), tagBits % 8 == 0 else {
                throw PKCS11Error(.argumentsBad, in: function, detail: "AES-GCM tag must be 96 to 128 bits, got \(tagBits)")
            }
            var ivCopy = iv
            var aadCopy = additionalData
            let result: Result<R, PKCS11Error> = ivCopy.withUnsafeMutableBufferPointer { ivBuffer in
                aadCopy.withUnsafeMutableBufferPointer { aadBuffer in
                    let aad = aadBuffer.isEmpty ? nil : aadBuffer.baseAddress
                    switch layout {
                    case .withIVBits:
                        var params = CK_GCM_PARAMS(
                            pIv: ivBuffer.baseAddress, ulIvLen: CK_ULONG(ivBuffer.count), ulIvBits: CK_ULONG(ivBuffer.count * 8),
                            pAAD: aad, ulAADLen: CK_ULONG(aadBuffer.count), ulTagBits: CK_ULONG(tagBits))
                        return Self.call(CKM_AES_GCM, with: &params, body)
                    case .withoutIVBits:
                        var params = CPKCS11_GCM_PARAMS_240(
                            pIv: ivBuffer.baseAddress, ulIvLen: CK_ULONG(ivBuffer.count), pAAD: aad, ulAADLen: CK_ULONG(aadBuffer.count),
                            ulTagBits: CK_ULONG(tagBits))
                        return Self.call(CKM_AES_GCM, with: &params, body)
                    }
                }
            }
            return try result.get()
        case .rsaPSS(let hash):
            var params = CK_RSA_PKCS_PSS_PARAMS(hashAlg: hash.mechanism, mgf: hash.mgf1, sLen: CK_ULONG(hash.digestLength))
            return try Self.call(CKM_RSA_PKCS_PSS, with: &params, body).get()
        case .rsaOAEP(let hash):
            var params = CK_RSA_PKCS_OAEP_PARAMS(
                hashAlg: hash.mechanism, mgf: hash.mgf1, source: CK_RSA_PKCS_OAEP_SOURCE_TYPE(CKZ_DATA_SPECIFIED), pSourceData: nil,
                ulSourceDataLen: 0)
            return try Self.call(CKM_RSA_PKCS_OAEP, with: &params, body).get()
        case .ecdh(let peerPoint):
            var point = peerPoint
            let result: Result<R, PKCS11Error> = point.withUnsafeMutableBufferPointer { pointBuffer in
                var params = CK_ECDH1_DERIVE_PARAMS(
                    kdf: ck_ec_kdf_t(CKD_NULL), ulSharedDataLen: 0, pSharedData: nil, ulPublicDataLen: CK_ULONG(pointBuffer.count),
                    pPublicData: pointBuffer.baseAddress)
                return Self.call(CKM_ECDH1_DERIVE, with: &params, body)
            }
            return try result.get()
        }
    }
}

extension Mechanism {
    /// Output length of an encryption, when the mechanism fixes it.
    func encryptedLength(of inputLength: Int) -> Int? {
        if case .aesGCM(_, _, let tagBits) = self { return inputLength + tagBits / 8 }
        return nil
    }

    /// A buffer large enough for a decryption's output, when the mechanism bounds it. The input length is used,
    /// not input minus tag: SoftHSM checks the buffer against its own over-estimate.
    func decryptedLengthBound(of inputLength: Int) -> Int? {
        if case .aesGCM = self { return inputLength }
        return nil
    }

    /// GCM parameters over a caller-owned IV buffer that the token fills, or no IV at all (an empty buffer) for
    /// tokens that choose the IV and append it to their output.
    static func withGCMOutputIV<R>(
        _ iv: inout [UInt8], additionalData: [UInt8], layout: GCMConvention.ParameterLayout,
        _ body: (UnsafeMutablePointer<CK_MECHANISM>) throws(PKCS11Error) -> R
    ) throws(PKCS11Error) -> R {
        var aadCopy = additionalData
        let result: Result<R, PKCS11Error> = iv.withUnsafeMutableBufferPointer { ivBuffer in
            aadCopy.withUnsafeMutableBufferPointer { aadBuffer in
                let aad = aadBuffer.isEmpty ? nil : aadBuffer.baseAddress
                let ivPointer = ivBuffer.isEmpty ? nil : ivBuffer.baseAddress
                switch layout {
                case .withIVBits:
                    var params = CK_GCM_PARAMS(
                        pIv: ivPointer, ulIvLen: CK_ULONG(ivBuffer.count), ulIvBits: CK_ULONG(ivBuffer.count * 8),
                        pAAD: aad, ulAADLen: CK_ULONG(aadBuffer.count), ulTagBits: CK_ULONG(gcmTagLength * 8))
                    return call(CKM_AES_GCM, with: &params, body)
                case .withoutIVBits:
                    var params = CPKCS11_GCM_PARAMS_240(
                        pIv: ivPointer, ulIvLen: CK_ULONG(ivBuffer.count), pAAD: aad, ulAADLen: CK_ULONG(aadBuffer.count),
                        ulTagBits: CK_ULONG(gcmTagLength * 8))
                    return call(CKM_AES_GCM, with: &params, body)
                }
            }
        }
        return try result.get()
    }

    /// Builds a `CK_MECHANISM` over `parameters` and runs `body` with it.
    fileprivate static func call<P, R>(
        _ type: some BinaryInteger, with parameters: inout P, _ body: (UnsafeMutablePointer<CK_MECHANISM>) throws(PKCS11Error) -> R
    ) -> Result<R, PKCS11Error> {
        withUnsafeMutablePointer(to: &parameters) { pointer in
            var mechanism = CK_MECHANISM(
                mechanism: CK_MECHANISM_TYPE(type), pParameter: UnsafeMutableRawPointer(pointer), ulParameterLen: CK_ULONG(MemoryLayout<P>.size))
            do throws(PKCS11Error) {
                return .success(try body(&mechanism))
            } catch {
                return .failure(error)
            }
        }
    }
}
