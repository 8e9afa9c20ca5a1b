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

    public var description: String { "CKM 0x" + String(rawValue, radix: 16) }
}

/// A mechanism with its parameters, checked before it reaches the token.
public enum Mechanism: Sendable {
    case aesKeyGen
    /// AES-GCM. The IV must be 12 bytes and the tag 96 to 128 bits: SoftHSM accepts an empty IV (same
    /// keystream every time) and a 0-bit tag (no authentication at all), so the binding refuses both.
    case aesGCM(iv: [UInt8], additionalData: [UInt8], tagBits: Int = 128)
    /// RFC 3394 key wrap (no parameter).
    case aesKeyWrap
    /// A parameterless key-wrap mechanism by code (RFC 5649's code is token-specific).
    case keyWrap(MechanismType)

    public static let gcmIVLength = 12
    public static let gcmTagLength = 16

    var type: MechanismType {
        switch self {
        case .aesKeyGen: .aesKeyGen
        case .aesGCM: .aesGCM
        case .aesKeyWrap: .aesKeyWrap
        case .keyWrap(let type): type
        }
    }

    /// Pins the parameters for the duration of one Cryptoki call.
    func withCMechanism<R>(
        for function: PKCS11Error.Function, _ body: (UnsafeMutablePointer<CK_MECHANISM>) throws(PKCS11Error) -> R
    ) throws(PKCS11Error) -> R {
        switch self {
        case .aesKeyGen, .aesKeyWrap, .keyWrap:
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
                    var params = CK_GCM_PARAMS(
                        pIv: ivBuffer.baseAddress, ulIvLen: CK_ULONG(ivBuffer.count), ulIvBits: CK_ULONG(ivBuffer.count * 8),
                        pAAD: aadBuffer.isEmpty ? nil : aadBuffer.baseAddress, ulAADLen: CK_ULONG(aadBuffer.count),
                        ulTagBits: CK_ULONG(tagBits))
                    return withUnsafeMutablePointer(to: &params) { paramsPointer in
                        var mechanism = CK_MECHANISM(
                            mechanism: CK_MECHANISM_TYPE(CKM_AES_GCM), pParameter: UnsafeMutableRawPointer(paramsPointer),
                            ulParameterLen: CK_ULONG(MemoryLayout<CK_GCM_PARAMS>.size))
                        do throws(PKCS11Error) {
                            return .success(try body(&mechanism))
                        } catch {
                            return .failure(error)
                        }
                    }
                }
            }
            return try result.get()
        }
    }
}
