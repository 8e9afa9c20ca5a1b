/// A Cryptoki failure: which function, which `CKR_*` code, and where in Trent it was called.
///
/// Equality and hashing consider only `function` and `returnValue`, so tests and callers can match on
/// what went wrong without caring where. The `detail` is for operators; it never holds key material.
public struct PKCS11Error: Error, Hashable, Sendable, CustomStringConvertible {
    public var function: Function
    public var returnValue: ReturnValue
    /// Extra context added by the binding (for example a guard that refused a dangerous parameter).
    public var detail: String?
    public var location: SourceLocation

    public init(
        _ returnValue: ReturnValue, in function: Function, detail: String? = nil,
        fileID: String = #fileID, line: Int = #line
    ) {
        self.function = function
        self.returnValue = returnValue
        self.detail = detail
        self.location = SourceLocation(fileID: fileID, line: line)
    }

    public static func == (lhs: PKCS11Error, rhs: PKCS11Error) -> Bool {
        lhs.function == rhs.function && lhs.returnValue == rhs.returnValue
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(function)
        hasher.combine(returnValue)
    }

    public var description: String {
        var text = "\(function.rawValue) returned \(returnValue)"
        if let detail { text += ": \(detail)" }
        return text
    }

    /// The session can no longer be trusted and must be closed rather than returned to the pool.
    public var invalidatesSession: Bool {
        switch returnValue {
        case .deviceError, .deviceRemoved, .tokenNotPresent, .sessionHandleInvalid, .sessionClosed,
            .cryptokiNotInitialized, .deviceMemory, .hostMemory:
            return true
        default:
            return false
        }
    }

    /// The whole module must be finalised and initialised again (a hardware HSM went away and came back).
    public var requiresModuleReset: Bool {
        switch returnValue {
        case .deviceError, .deviceRemoved, .tokenNotPresent, .cryptokiNotInitialized: return true
        default: return false
        }
    }
}

public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    public var fileID: String
    public var line: Int
    public var description: String { "\(fileID):\(line)" }
}

extension PKCS11Error {
    /// The Cryptoki functions Trent calls, named as the standard names them.
    public struct Function: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let loadModule = Function(rawValue: "dlopen")
        public static let getFunctionList = Function(rawValue: "C_GetFunctionList")
        public static let initialize = Function(rawValue: "C_Initialize")
        public static let finalize = Function(rawValue: "C_Finalize")
        public static let getInfo = Function(rawValue: "C_GetInfo")
        public static let getSlotList = Function(rawValue: "C_GetSlotList")
        public static let getTokenInfo = Function(rawValue: "C_GetTokenInfo")
        public static let getMechanismList = Function(rawValue: "C_GetMechanismList")
        public static let initToken = Function(rawValue: "C_InitToken")
        public static let initPIN = Function(rawValue: "C_InitPIN")
        public static let openSession = Function(rawValue: "C_OpenSession")
        public static let closeSession = Function(rawValue: "C_CloseSession")
        public static let login = Function(rawValue: "C_Login")
        public static let logout = Function(rawValue: "C_Logout")
        public static let generateRandom = Function(rawValue: "C_GenerateRandom")
        public static let generateKey = Function(rawValue: "C_GenerateKey")
        public static let encryptInit = Function(rawValue: "C_EncryptInit")
        public static let encrypt = Function(rawValue: "C_Encrypt")
        public static let decryptInit = Function(rawValue: "C_DecryptInit")
        public static let decrypt = Function(rawValue: "C_Decrypt")
        public static let wrapKey = Function(rawValue: "C_WrapKey")
        public static let unwrapKey = Function(rawValue: "C_UnwrapKey")
        public static let getAttributeValue = Function(rawValue: "C_GetAttributeValue")
        public static let findObjectsInit = Function(rawValue: "C_FindObjectsInit")
        public static let findObjects = Function(rawValue: "C_FindObjects")
        public static let findObjectsFinal = Function(rawValue: "C_FindObjectsFinal")
        public static let destroyObject = Function(rawValue: "C_DestroyObject")
        public static let copyObject = Function(rawValue: "C_CopyObject")
        public static let signInit = Function(rawValue: "C_SignInit")
        public static let sign = Function(rawValue: "C_Sign")
        public static let verifyInit = Function(rawValue: "C_VerifyInit")
        public static let verify = Function(rawValue: "C_Verify")
        public static let generateKeyPair = Function(rawValue: "C_GenerateKeyPair")
        public static let createObject = Function(rawValue: "C_CreateObject")
        public static let deriveKey = Function(rawValue: "C_DeriveKey")
        public static let getSessionInfo = Function(rawValue: "C_GetSessionInfo")

        /// Every function above: the label values of the PKCS#11 call metrics (``CallMetrics``).
        static let all: [Function] = [
            loadModule, getFunctionList, initialize, finalize, getInfo, getSlotList, getTokenInfo, getMechanismList, initToken, initPIN,
            openSession, closeSession, login, logout, generateRandom, generateKey, encryptInit, encrypt, decryptInit, decrypt, wrapKey,
            unwrapKey, getAttributeValue, findObjectsInit, findObjects, findObjectsFinal, destroyObject, copyObject, signInit, sign,
            verifyInit, verify, generateKeyPair, createObject, deriveKey, getSessionInfo,
        ]
    }

    /// A `CK_RV`. Named constants cover the codes Trent reacts to; any other prints in hex.
    public struct ReturnValue: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: UInt
        public init(rawValue: UInt) { self.rawValue = rawValue }

        public static let ok = ReturnValue(rawValue: 0x0)
        public static let hostMemory = ReturnValue(rawValue: 0x2)
        public static let slotIDInvalid = ReturnValue(rawValue: 0x3)
        public static let generalError = ReturnValue(rawValue: 0x5)
        public static let functionFailed = ReturnValue(rawValue: 0x6)
        public static let argumentsBad = ReturnValue(rawValue: 0x7)
        public static let attributeReadOnly = ReturnValue(rawValue: 0x10)
        public static let attributeSensitive = ReturnValue(rawValue: 0x11)
        public static let attributeTypeInvalid = ReturnValue(rawValue: 0x12)
        public static let attributeValueInvalid = ReturnValue(rawValue: 0x13)
        public static let actionProhibited = ReturnValue(rawValue: 0x1B)
        public static let dataInvalid = ReturnValue(rawValue: 0x20)
        public static let dataLenRange = ReturnValue(rawValue: 0x21)
        public static let deviceError = ReturnValue(rawValue: 0x30)
        public static let deviceMemory = ReturnValue(rawValue: 0x31)
        public static let deviceRemoved = ReturnValue(rawValue: 0x32)
        public static let encryptedDataInvalid = ReturnValue(rawValue: 0x40)
        public static let encryptedDataLenRange = ReturnValue(rawValue: 0x41)
        public static let functionNotSupported = ReturnValue(rawValue: 0x54)
        public static let keyHandleInvalid = ReturnValue(rawValue: 0x60)
        public static let keySizeRange = ReturnValue(rawValue: 0x62)
        public static let keyTypeInconsistent = ReturnValue(rawValue: 0x63)
        public static let keyFunctionNotPermitted = ReturnValue(rawValue: 0x68)
        public static let keyUnextractable = ReturnValue(rawValue: 0x6A)
        public static let mechanismInvalid = ReturnValue(rawValue: 0x70)
        public static let mechanismParamInvalid = ReturnValue(rawValue: 0x71)
        public static let objectHandleInvalid = ReturnValue(rawValue: 0x82)
        public static let operationActive = ReturnValue(rawValue: 0x90)
        public static let operationNotInitialized = ReturnValue(rawValue: 0x91)
        public static let pinIncorrect = ReturnValue(rawValue: 0xA0)
        public static let pinInvalid = ReturnValue(rawValue: 0xA1)
        public static let pinLenRange = ReturnValue(rawValue: 0xA2)
        public static let pinLocked = ReturnValue(rawValue: 0xA4)
        public static let sessionClosed = ReturnValue(rawValue: 0xB0)
        public static let sessionCount = ReturnValue(rawValue: 0xB1)
        public static let sessionHandleInvalid = ReturnValue(rawValue: 0xB3)
        public static let sessionReadOnly = ReturnValue(rawValue: 0xB5)
        public static let sessionExists = ReturnValue(rawValue: 0xB6)
        public static let signatureInvalid = ReturnValue(rawValue: 0xC0)
        public static let signatureLenRange = ReturnValue(rawValue: 0xC1)
        public static let templateIncomplete = ReturnValue(rawValue: 0xD0)
        public static let templateInconsistent = ReturnValue(rawValue: 0xD1)
        public static let tokenNotPresent = ReturnValue(rawValue: 0xE0)
        public static let tokenNotRecognized = ReturnValue(rawValue: 0xE1)
        public static let unwrappingKeyHandleInvalid = ReturnValue(rawValue: 0xF0)
        public static let userAlreadyLoggedIn = ReturnValue(rawValue: 0x100)
        public static let userNotLoggedIn = ReturnValue(rawValue: 0x101)
        public static let userPINNotInitialized = ReturnValue(rawValue: 0x102)
        public static let userTypeInvalid = ReturnValue(rawValue: 0x103)
        public static let wrappedKeyInvalid = ReturnValue(rawValue: 0x110)
        public static let wrappedKeyLenRange = ReturnValue(rawValue: 0x112)
        public static let randomNoRNG = ReturnValue(rawValue: 0x121)
        public static let domainParamsInvalid = ReturnValue(rawValue: 0x130)
        public static let curveNotSupported = ReturnValue(rawValue: 0x140)
        public static let bufferTooSmall = ReturnValue(rawValue: 0x150)
        public static let cryptokiNotInitialized = ReturnValue(rawValue: 0x190)
        public static let cryptokiAlreadyInitialized = ReturnValue(rawValue: 0x191)

        private static let names: [UInt: String] = [
            0x0: "CKR_OK", 0x2: "CKR_HOST_MEMORY", 0x3: "CKR_SLOT_ID_INVALID", 0x5: "CKR_GENERAL_ERROR",
            0x6: "CKR_FUNCTION_FAILED", 0x7: "CKR_ARGUMENTS_BAD", 0x10: "CKR_ATTRIBUTE_READ_ONLY",
            0x11: "CKR_ATTRIBUTE_SENSITIVE", 0x12: "CKR_ATTRIBUTE_TYPE_INVALID", 0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
            0x1B: "CKR_ACTION_PROHIBITED", 0x20: "CKR_DATA_INVALID", 0x21: "CKR_DATA_LEN_RANGE",
            0x30: "CKR_DEVICE_ERROR", 0x31: "CKR_DEVICE_MEMORY", 0x32: "CKR_DEVICE_REMOVED",
            0x40: "CKR_ENCRYPTED_DATA_INVALID", 0x41: "CKR_ENCRYPTED_DATA_LEN_RANGE",
            0x54: "CKR_FUNCTION_NOT_SUPPORTED", 0x60: "CKR_KEY_HANDLE_INVALID", 0x62: "CKR_KEY_SIZE_RANGE",
            0x63: "CKR_KEY_TYPE_INCONSISTENT", 0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED", 0x6A: "CKR_KEY_UNEXTRACTABLE",
            0x70: "CKR_MECHANISM_INVALID", 0x71: "CKR_MECHANISM_PARAM_INVALID", 0x82: "CKR_OBJECT_HANDLE_INVALID",
            0x90: "CKR_OPERATION_ACTIVE", 0x91: "CKR_OPERATION_NOT_INITIALIZED", 0xA0: "CKR_PIN_INCORRECT",
            0xA1: "CKR_PIN_INVALID", 0xA2: "CKR_PIN_LEN_RANGE", 0xA4: "CKR_PIN_LOCKED", 0xB0: "CKR_SESSION_CLOSED",
            0xB1: "CKR_SESSION_COUNT", 0xB3: "CKR_SESSION_HANDLE_INVALID", 0xB5: "CKR_SESSION_READ_ONLY",
            0xB6: "CKR_SESSION_EXISTS", 0xC0: "CKR_SIGNATURE_INVALID", 0xC1: "CKR_SIGNATURE_LEN_RANGE", 0xD0: "CKR_TEMPLATE_INCOMPLETE",
            0xD1: "CKR_TEMPLATE_INCONSISTENT", 0xE0: "CKR_TOKEN_NOT_PRESENT", 0xE1: "CKR_TOKEN_NOT_RECOGNIZED",
            0xF0: "CKR_UNWRAPPING_KEY_HANDLE_INVALID", 0x100: "CKR_USER_ALREADY_LOGGED_IN",
            0x101: "CKR_USER_NOT_LOGGED_IN", 0x102: "CKR_USER_PIN_NOT_INITIALIZED", 0x103: "CKR_USER_TYPE_INVALID",
            0x110: "CKR_WRAPPED_KEY_INVALID", 0x112: "CKR_WRAPPED_KEY_LEN_RANGE", 0x121: "CKR_RANDOM_NO_RNG",
            0x130: "CKR_DOMAIN_PARAMETERS_INVALID", 0x140: "CKR_CURVE_NOT_SUPPORTED",
            0x150: "CKR_BUFFER_TOO_SMALL", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
            0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        ]

        /// The code's `CKR_*` name, or `CKR_VENDOR_DEFINED` / `CKR_UNKNOWN`: a bounded metric label for any value a module returns.
        public var name: String {
            if let name = Self.names[rawValue] { return name }
            return rawValue >= 0x8000_0000 ? "CKR_VENDOR_DEFINED" : "CKR_UNKNOWN"
        }

        /// Parses `CKR_GENERAL_ERROR` or a hex code such as `0x5` (HSM profiles name codes this way).
        public init?(name: String) {
            if name.lowercased().hasPrefix("0x"), let value = UInt(name.dropFirst(2), radix: 16) {
                self.init(rawValue: value)
                return
            }
            guard let code = Self.names.first(where: { $0.value == name })?.key else { return nil }
            self.init(rawValue: code)
        }

        public var description: String {
            let hex = "0x" + String(rawValue, radix: 16, uppercase: true)
            if let name = Self.names[rawValue] { return "\(name) (\(hex))" }
            return rawValue >= 0x8000_0000 ? "vendor-defined CKR (\(hex))" : "CKR \(hex)"
        }
    }
}
