internal import CPKCS11

/// A handle to a key or other object in the token. Session-object handles die with the session that
/// created them and every handle dies at `C_Finalize`, so handles never leave the process.
public struct ObjectHandle: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public var description: String { "object #\(rawValue)" }
}

/// A `CKA_*` attribute type.
public struct AttributeType: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let objectClass = AttributeType(rawValue: UInt(CKA_CLASS))
    public static let token = AttributeType(rawValue: UInt(CKA_TOKEN))
    public static let `private` = AttributeType(rawValue: UInt(CKA_PRIVATE))
    public static let label = AttributeType(rawValue: UInt(CKA_LABEL))
    public static let value = AttributeType(rawValue: UInt(CKA_VALUE))
    public static let keyType = AttributeType(rawValue: UInt(CKA_KEY_TYPE))
    public static let id = AttributeType(rawValue: UInt(CKA_ID))
    public static let sensitive = AttributeType(rawValue: UInt(CKA_SENSITIVE))
    public static let encrypt = AttributeType(rawValue: UInt(CKA_ENCRYPT))
    public static let decrypt = AttributeType(rawValue: UInt(CKA_DECRYPT))
    public static let wrap = AttributeType(rawValue: UInt(CKA_WRAP))
    public static let unwrap = AttributeType(rawValue: UInt(CKA_UNWRAP))
    public static let sign = AttributeType(rawValue: UInt(CKA_SIGN))
    public static let signRecover = AttributeType(rawValue: UInt(CKA_SIGN_RECOVER))
    public static let verify = AttributeType(rawValue: UInt(CKA_VERIFY))
    public static let derive = AttributeType(rawValue: UInt(CKA_DERIVE))
    public static let valueLength = AttributeType(rawValue: UInt(CKA_VALUE_LEN))
    public static let extractable = AttributeType(rawValue: UInt(CKA_EXTRACTABLE))
    public static let local = AttributeType(rawValue: UInt(CKA_LOCAL))
    public static let neverExtractable = AttributeType(rawValue: UInt(CKA_NEVER_EXTRACTABLE))
    public static let alwaysSensitive = AttributeType(rawValue: UInt(CKA_ALWAYS_SENSITIVE))
    public static let modifiable = AttributeType(rawValue: UInt(CKA_MODIFIABLE))
    public static let checkValue = AttributeType(rawValue: UInt(CKA_CHECK_VALUE))
    public static let allowedMechanisms = AttributeType(rawValue: UInt(CKA_ALLOWED_MECHANISMS))
    public static let modulus = AttributeType(rawValue: UInt(CKA_MODULUS))
    public static let modulusBits = AttributeType(rawValue: UInt(CKA_MODULUS_BITS))
    public static let publicExponent = AttributeType(rawValue: UInt(CKA_PUBLIC_EXPONENT))
    public static let privateExponent = AttributeType(rawValue: UInt(CKA_PRIVATE_EXPONENT))
    public static let prime1 = AttributeType(rawValue: UInt(CKA_PRIME_1))
    public static let prime2 = AttributeType(rawValue: UInt(CKA_PRIME_2))
    public static let exponent1 = AttributeType(rawValue: UInt(CKA_EXPONENT_1))
    public static let exponent2 = AttributeType(rawValue: UInt(CKA_EXPONENT_2))
    public static let coefficient = AttributeType(rawValue: UInt(CKA_COEFFICIENT))
    public static let ecParams = AttributeType(rawValue: UInt(CKA_EC_PARAMS))
    public static let ecPoint = AttributeType(rawValue: UInt(CKA_EC_POINT))

    /// NSS softoken's vendor attribute `CKA_NSS_DB` (`CKA_NETSCAPE_DB`, pkcs11n.h): the public value it keeps with a
    /// private key. Its `C_UnwrapKey` of an EC private key needs it in the template (the uncompressed point); other
    /// tokens refuse it (SoftHSM: `CKR_ATTRIBUTE_TYPE_INVALID`). Sent only where the HSM profile names it.
    public static let nssDB = AttributeType(rawValue: 0xD5A0_DB00)

    /// The attribute names HSM profiles and probe lines use.
    static let names: [UInt: String] = [
        UInt(CKA_CLASS): "CKA_CLASS", UInt(CKA_TOKEN): "CKA_TOKEN", UInt(CKA_PRIVATE): "CKA_PRIVATE", UInt(CKA_LABEL): "CKA_LABEL",
        UInt(CKA_VALUE): "CKA_VALUE", UInt(CKA_KEY_TYPE): "CKA_KEY_TYPE", UInt(CKA_ID): "CKA_ID", UInt(CKA_SENSITIVE): "CKA_SENSITIVE",
        UInt(CKA_ENCRYPT): "CKA_ENCRYPT", UInt(CKA_DECRYPT): "CKA_DECRYPT", UInt(CKA_WRAP): "CKA_WRAP", UInt(CKA_UNWRAP): "CKA_UNWRAP",
        UInt(CKA_SIGN): "CKA_SIGN", UInt(CKA_SIGN_RECOVER): "CKA_SIGN_RECOVER", UInt(CKA_VERIFY): "CKA_VERIFY",
        UInt(CKA_DERIVE): "CKA_DERIVE", UInt(CKA_VALUE_LEN): "CKA_VALUE_LEN", UInt(CKA_EXTRACTABLE): "CKA_EXTRACTABLE",
        UInt(CKA_EC_PARAMS): "CKA_EC_PARAMS", UInt(CKA_EC_POINT): "CKA_EC_POINT", 0xD5A0_DB00: "CKA_NSS_DB",
    ]

    /// The standard name, such as `CKA_SIGN`, or the code in hex.
    public var name: String { Self.names[rawValue] ?? "0x" + String(rawValue, radix: 16, uppercase: true) }

    /// Parses `CKA_SIGN`, `CKA_NSS_DB` or a hex code such as `0xD5A0DB00`.
    public init?(name: String) {
        if name.lowercased().hasPrefix("0x"), let value = UInt(name.dropFirst(2), radix: 16) {
            self.init(rawValue: value)
            return
        }
        guard let code = Self.names.first(where: { $0.value == name })?.key else { return nil }
        self.init(rawValue: code)
    }
}

/// `CKO_*` object classes Trent uses.
public struct ObjectClass: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static let secretKey = ObjectClass(rawValue: UInt(CKO_SECRET_KEY))
    public static let publicKey = ObjectClass(rawValue: UInt(CKO_PUBLIC_KEY))
    public static let privateKey = ObjectClass(rawValue: UInt(CKO_PRIVATE_KEY))
}

/// `CKK_*` key types Trent uses.
public struct KeyType: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static let aes = KeyType(rawValue: UInt(CKK_AES))
    public static let genericSecret = KeyType(rawValue: UInt(CKK_GENERIC_SECRET))
    public static let rsa = KeyType(rawValue: UInt(CKK_RSA))
    public static let ec = KeyType(rawValue: UInt(CKK_EC))
}

/// One attribute with its value encoded as Cryptoki expects it (`CK_BBOOL` is one byte, `CK_ULONG` is
/// a native-endian machine word).
public struct Attribute: Sendable, Hashable {
    public var type: AttributeType
    public var value: [UInt8]

    public init(_ type: AttributeType, bytes: [UInt8]) {
        self.type = type
        self.value = bytes
    }

    public init(_ type: AttributeType, _ flag: Bool) {
        self.init(type, bytes: [flag ? 1 : 0])
    }

    public init(_ type: AttributeType, ulong: UInt) {
        self.init(type, bytes: withUnsafeBytes(of: ulong) { Array($0) })
    }

    public init(_ type: AttributeType, string: String) {
        self.init(type, bytes: Array(string.utf8))
    }

    public static func objectClass(_ value: ObjectClass) -> Attribute { Attribute(.objectClass, ulong: value.rawValue) }
    public static func keyType(_ value: KeyType) -> Attribute { Attribute(.keyType, ulong: value.rawValue) }
    public static func allowedMechanisms(_ mechanisms: [MechanismType]) -> Attribute {
        Attribute(.allowedMechanisms, bytes: mechanisms.flatMap { m in withUnsafeBytes(of: m.rawValue) { Array($0) } })
    }

    /// Reads the value as a `CK_BBOOL`.
    public var boolValue: Bool? { value.count == 1 ? value[0] != 0 : nil }

    /// Reads the value as a `CK_ULONG`.
    public var ulongValue: UInt? {
        guard value.count == MemoryLayout<UInt>.size else { return nil }
        return value.withUnsafeBytes { $0.loadUnaligned(as: UInt.self) }
    }
}

/// Builds a `CK_ATTRIBUTE` array over the values of `attributes` for the duration of `body`.
func withCTemplate<R>(
    _ attributes: [Attribute], _ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, CK_ULONG) throws(PKCS11Error) -> R
) throws(PKCS11Error) -> R {
    // One contiguous buffer holds every value, so each CK_ATTRIBUTE can point into it safely.
    var storage = attributes.flatMap(\.value)
    let result: Result<R, PKCS11Error> = storage.withUnsafeMutableBytes { raw in
        var offset = 0
        var template = attributes.map { attribute -> CK_ATTRIBUTE in
            defer { offset += attribute.value.count }
            let pointer = attribute.value.isEmpty ? nil : raw.baseAddress! + offset
            return CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(attribute.type.rawValue), pValue: pointer, ulValueLen: CK_ULONG(attribute.value.count))
        }
        return template.withUnsafeMutableBufferPointer { buffer in
            do throws(PKCS11Error) {
                return .success(try body(buffer.baseAddress, CK_ULONG(buffer.count)))
            } catch {
                return .failure(error)
            }
        }
    }
    return try result.get()
}
