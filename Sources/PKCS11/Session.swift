internal import CPKCS11

/// A Cryptoki session. Sessions are not thread-safe (SoftHSM crashes when two threads share one), so a
/// session is `~Copyable`, lent by ``Token/withSession(_:)`` to one caller at a time, and cannot escape it.
///
/// Every operation runs to completion: an `*Init` is always followed by its final call, and a failed
/// call that could leave an operation active makes the session unusable (the pool then closes it).
public struct Session: ~Copyable {
    let functions: FunctionList
    let handle: CK_SESSION_HANDLE
    /// How this token does AES-GCM.
    public let gcm: GCMConvention

    init(functions: FunctionList, handle: CK_SESSION_HANDLE, gcm: GCMConvention = GCMConvention()) {
        self.functions = functions
        self.handle = handle
        self.gcm = gcm
    }

    static func open(functions: FunctionList, slot: SlotID, gcm: GCMConvention = GCMConvention()) throws(PKCS11Error) -> Session {
        var handle: CK_SESSION_HANDLE = 0
        try call(.openSession) {
            functions.list.C_OpenSession?(CK_SLOT_ID(slot), CK_FLAGS(CKF_SERIAL_SESSION | CKF_RW_SESSION), nil, nil, &handle)
        }
        return Session(functions: functions, handle: handle, gcm: gcm)
    }

    func close() {
        _ = functions.list.C_CloseSession?(handle)
    }

    public enum UserType: Sendable {
        case user, securityOfficer
        var rawValue: CK_USER_TYPE { self == .user ? CK_USER_TYPE(CKU_USER) : CK_USER_TYPE(CKU_SO) }
    }

    /// Logs the application in. Login state belongs to the process, so `CKR_USER_ALREADY_LOGGED_IN` is success.
    public func login(_ userType: UserType = .user, pin: PIN) throws(PKCS11Error) {
        var bytes = pin.bytes
        do {
            try call(.login) { functions.list.C_Login?(handle, userType.rawValue, &bytes, CK_ULONG(bytes.count)) }
        } catch where error.returnValue == .userAlreadyLoggedIn {
            return
        }
    }

    func logout() throws(PKCS11Error) {
        try call(.logout) { functions.list.C_Logout?(handle) }
    }

    // MARK: Random

    /// Bytes from the token's random number generator.
    public func generateRandom(count: Int) throws(PKCS11Error) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        if count == 0 { return bytes }
        try call(.generateRandom) { functions.list.C_GenerateRandom?(handle, &bytes, CK_ULONG(count)) }
        return bytes
    }

    // MARK: Keys

    public func generateKey(_ mechanism: Mechanism, template: [Attribute]) throws(PKCS11Error) -> ObjectHandle {
        var key: CK_OBJECT_HANDLE = 0
        try mechanism.withCMechanism(for: .generateKey) { cMechanism throws(PKCS11Error) in
            try withCTemplate(template) { attributes, count throws(PKCS11Error) in
                try call(.generateKey) { functions.list.C_GenerateKey?(handle, cMechanism, attributes, count, &key) }
            }
        }
        return ObjectHandle(rawValue: UInt(key))
    }

    /// Generates a key pair; returns the public and private key handles.
    public func generateKeyPair(
        _ mechanism: Mechanism, publicTemplate: [Attribute], privateTemplate: [Attribute]
    ) throws(PKCS11Error) -> (publicKey: ObjectHandle, privateKey: ObjectHandle) {
        var publicKey: CK_OBJECT_HANDLE = 0
        var privateKey: CK_OBJECT_HANDLE = 0
        try mechanism.withCMechanism(for: .generateKeyPair) { cMechanism throws(PKCS11Error) in
            try withCTemplate(publicTemplate) { publicAttributes, publicCount throws(PKCS11Error) in
                try withCTemplate(privateTemplate) { privateAttributes, privateCount throws(PKCS11Error) in
                    try call(.generateKeyPair) {
                        functions.list.C_GenerateKeyPair?(
                            handle, cMechanism, publicAttributes, publicCount, privateAttributes, privateCount, &publicKey, &privateKey)
                    }
                }
            }
        }
        return (ObjectHandle(rawValue: UInt(publicKey)), ObjectHandle(rawValue: UInt(privateKey)))
    }

    /// Creates an object from its attributes (Trent uses it only for public keys).
    public func createObject(_ template: [Attribute]) throws(PKCS11Error) -> ObjectHandle {
        var object: CK_OBJECT_HANDLE = 0
        try withCTemplate(template) { attributes, count throws(PKCS11Error) in
            try call(.createObject) { functions.list.C_CreateObject?(handle, attributes, count, &object) }
        }
        return ObjectHandle(rawValue: UInt(object))
    }

    /// Derives a new key from `baseKey` (ECDH) into an object described by `template`.
    public func deriveKey(_ baseKey: ObjectHandle, mechanism: Mechanism, template: [Attribute]) throws(PKCS11Error) -> ObjectHandle {
        var derived: CK_OBJECT_HANDLE = 0
        try mechanism.withCMechanism(for: .deriveKey) { cMechanism throws(PKCS11Error) in
            try withCTemplate(template) { attributes, count throws(PKCS11Error) in
                try call(.deriveKey) {
                    functions.list.C_DeriveKey?(handle, cMechanism, CK_OBJECT_HANDLE(baseKey.rawValue), attributes, count, &derived)
                }
            }
        }
        return ObjectHandle(rawValue: UInt(derived))
    }

    /// Wraps (encrypts) `key` under `wrappingKey` inside the token.
    public func wrapKey(_ key: ObjectHandle, with wrappingKey: ObjectHandle, mechanism: Mechanism) throws(PKCS11Error) -> [UInt8] {
        try mechanism.withCMechanism(for: .wrapKey) { cMechanism throws(PKCS11Error) in
            try twoCallOutput(.wrapKey) { output, length in
                functions.list.C_WrapKey?(
                    handle, cMechanism, CK_OBJECT_HANDLE(wrappingKey.rawValue), CK_OBJECT_HANDLE(key.rawValue), output, length)
            }
        }
    }

    /// Unwraps `wrapped` under `unwrappingKey` into a new object described by `template`.
    public func unwrapKey(
        _ wrapped: [UInt8], with unwrappingKey: ObjectHandle, mechanism: Mechanism, template: [Attribute]
    ) throws(PKCS11Error) -> ObjectHandle {
        var key: CK_OBJECT_HANDLE = 0
        var input = wrapped
        try mechanism.withCMechanism(for: .unwrapKey) { cMechanism throws(PKCS11Error) in
            try withCTemplate(template) { attributes, count throws(PKCS11Error) in
                try call(.unwrapKey) {
                    functions.list.C_UnwrapKey?(
                        handle, cMechanism, CK_OBJECT_HANDLE(unwrappingKey.rawValue), &input, CK_ULONG(input.count),
                        attributes, count, &key)
                }
            }
        }
        return ObjectHandle(rawValue: UInt(key))
    }

    /// Copies an object, changing the attributes in `template` (`CKA_TOKEN=false` makes a fast session copy).
    public func copyObject(_ object: ObjectHandle, template: [Attribute]) throws(PKCS11Error) -> ObjectHandle {
        var copy: CK_OBJECT_HANDLE = 0
        try withCTemplate(template) { attributes, count throws(PKCS11Error) in
            try call(.copyObject) { functions.list.C_CopyObject?(handle, CK_OBJECT_HANDLE(object.rawValue), attributes, count, &copy) }
        }
        return ObjectHandle(rawValue: UInt(copy))
    }

    public func destroyObject(_ object: ObjectHandle) throws(PKCS11Error) {
        try call(.destroyObject) { functions.list.C_DestroyObject?(handle, CK_OBJECT_HANDLE(object.rawValue)) }
    }

    // MARK: Encryption

    public func encrypt(_ plaintext: [UInt8], key: ObjectHandle, mechanism: Mechanism) throws(PKCS11Error) -> [UInt8] {
        var input = plaintext
        return try mechanism.withCMechanism(for: .encryptInit, layout: gcm.parameterLayout) { cMechanism throws(PKCS11Error) in
            try call(.encryptInit) { functions.list.C_EncryptInit?(handle, cMechanism, CK_OBJECT_HANDLE(key.rawValue)) }
            return try output(.encrypt, knownLength: mechanism.encryptedLength(of: input.count)) { output, length in
                functions.list.C_Encrypt?(handle, &input, CK_ULONG(input.count), output, length)
            }
        }
    }

    /// Decrypts in the token. For AES-GCM a failed tag check comes back as whatever the token uses for it
    /// (SoftHSM: `CKR_GENERAL_ERROR`, NSS: `CKR_ENCRYPTED_DATA_INVALID`); the HSM profile says which codes mean that.
    public func decrypt(_ ciphertext: [UInt8], key: ObjectHandle, mechanism: Mechanism) throws(PKCS11Error) -> [UInt8] {
        var input = ciphertext
        return try mechanism.withCMechanism(for: .decryptInit, layout: gcm.parameterLayout) { cMechanism throws(PKCS11Error) in
            try call(.decryptInit) { functions.list.C_DecryptInit?(handle, cMechanism, CK_OBJECT_HANDLE(key.rawValue)) }
            return try output(.decrypt, knownLength: mechanism.decryptedLengthBound(of: input.count)) { output, length in
                functions.list.C_Decrypt?(handle, &input, CK_ULONG(input.count), output, length)
            }
        }
    }

    /// AES-GCM encryption with the IV made the way this token makes it: a random IV from the token's RNG passed
    /// in, or one the token writes into the IV buffer or appends to its output. Returns the IV and ciphertext||tag.
    public func sealGCM(_ plaintext: [UInt8], key: ObjectHandle, additionalData: [UInt8]) throws(PKCS11Error) -> (iv: [UInt8], sealed: [UInt8]) {
        let ivLength = Mechanism.gcmIVLength
        switch gcm.ivSource {
        case .caller:
            let iv = try generateRandom(count: ivLength)
            return (iv, try encrypt(plaintext, key: key, mechanism: .aesGCM(iv: iv, additionalData: additionalData)))
        case .tokenFillsBuffer:
            var iv = [UInt8](repeating: 0, count: ivLength)
            var input = plaintext
            let sealed = try Mechanism.withGCMOutputIV(&iv, additionalData: additionalData, layout: gcm.parameterLayout) { cMechanism throws(PKCS11Error) in
                try call(.encryptInit) { functions.list.C_EncryptInit?(handle, cMechanism, CK_OBJECT_HANDLE(key.rawValue)) }
                return try output(.encrypt, knownLength: input.count + Mechanism.gcmTagLength) { output, length in
                    functions.list.C_Encrypt?(handle, &input, CK_ULONG(input.count), output, length)
                }
            }
            guard iv.contains(where: { $0 != 0 }) else {
                throw PKCS11Error(.functionFailed, in: .encrypt, detail: "the token did not write the GCM IV it chose; check the HSM profile's gcm.ivSource")
            }
            return (iv, sealed)
        case .tokenAppends:
            var iv: [UInt8] = []
            var input = plaintext
            let output = try Mechanism.withGCMOutputIV(&iv, additionalData: additionalData, layout: gcm.parameterLayout) { cMechanism throws(PKCS11Error) in
                try call(.encryptInit) { functions.list.C_EncryptInit?(handle, cMechanism, CK_OBJECT_HANDLE(key.rawValue)) }
                return try self.output(.encrypt, knownLength: input.count + Mechanism.gcmTagLength + ivLength) { output, length in
                    functions.list.C_Encrypt?(handle, &input, CK_ULONG(input.count), output, length)
                }
            }
            guard output.count == plaintext.count + Mechanism.gcmTagLength + ivLength else {
                throw PKCS11Error(.functionFailed, in: .encrypt, detail: "the token's GCM output has no appended IV; check the HSM profile's gcm.ivSource")
            }
            return (Array(output.suffix(ivLength)), Array(output.dropLast(ivLength)))
        }
    }

    // MARK: Signatures and MACs

    /// Signs (or MACs) `data` in the token.
    public func sign(_ data: [UInt8], key: ObjectHandle, mechanism: Mechanism) throws(PKCS11Error) -> [UInt8] {
        var input = data
        return try mechanism.withCMechanism(for: .signInit, layout: gcm.parameterLayout) { cMechanism throws(PKCS11Error) in
            try call(.signInit) { functions.list.C_SignInit?(handle, cMechanism, CK_OBJECT_HANDLE(key.rawValue)) }
            return try twoCallOutput(.sign) { output, length in
                functions.list.C_Sign?(handle, &input, CK_ULONG(input.count), output, length)
            }
        }
    }

    /// Verifies a signature (or MAC) in the token. A mismatch throws whatever the token uses for it (SoftHSM:
    /// `CKR_SIGNATURE_INVALID`, NSS: `CKR_DEVICE_ERROR` for HMAC); the HSM profile lists those codes.
    public func verify(_ data: [UInt8], signature: [UInt8], key: ObjectHandle, mechanism: Mechanism) throws(PKCS11Error) {
        var input = data
        var signatureBytes = signature
        try mechanism.withCMechanism(for: .verifyInit, layout: gcm.parameterLayout) { cMechanism throws(PKCS11Error) in
            try call(.verifyInit) { functions.list.C_VerifyInit?(handle, cMechanism, CK_OBJECT_HANDLE(key.rawValue)) }
            try call(.verify) {
                functions.list.C_Verify?(handle, &input, CK_ULONG(input.count), &signatureBytes, CK_ULONG(signatureBytes.count))
            }
        }
    }

    // MARK: Objects

    /// Reads one attribute. A sensitive value fails with `CKR_ATTRIBUTE_SENSITIVE`.
    public func attribute(_ type: AttributeType, of object: ObjectHandle) throws(PKCS11Error) -> Attribute {
        var query = CK_ATTRIBUTE(type: CK_ATTRIBUTE_TYPE(type.rawValue), pValue: nil, ulValueLen: 0)
        try call(.getAttributeValue) { functions.list.C_GetAttributeValue?(handle, CK_OBJECT_HANDLE(object.rawValue), &query, 1) }
        guard query.ulValueLen != CPKCS11_UNAVAILABLE_INFORMATION else {
            throw PKCS11Error(.attributeTypeInvalid, in: .getAttributeValue, detail: "attribute is unavailable")
        }
        var value = [UInt8](repeating: 0, count: Int(query.ulValueLen))
        try call(.getAttributeValue) {
            value.withUnsafeMutableBytes { buffer in
                query.pValue = buffer.baseAddress
                return functions.list.C_GetAttributeValue?(handle, CK_OBJECT_HANDLE(object.rawValue), &query, 1)
            }
        }
        return Attribute(type, bytes: Array(value.prefix(Int(query.ulValueLen))))
    }

    /// Finds objects matching `template`. `C_FindObjectsFinal` always follows `C_FindObjectsInit`.
    public func findObjects(matching template: [Attribute], limit: Int = 16) throws(PKCS11Error) -> [ObjectHandle] {
        try withCTemplate(template) { attributes, count throws(PKCS11Error) in
            try call(.findObjectsInit) { functions.list.C_FindObjectsInit?(handle, attributes, count) }
            var found = [CK_OBJECT_HANDLE](repeating: 0, count: max(limit, 1))
            var foundCount: CK_ULONG = 0
            var findError: PKCS11Error?
            do throws(PKCS11Error) {
                try call(.findObjects) { functions.list.C_FindObjects?(handle, &found, CK_ULONG(found.count), &foundCount) }
            } catch {
                findError = error
            }
            try call(.findObjectsFinal) { functions.list.C_FindObjectsFinal?(handle) }
            if let findError { throw findError }
            return found.prefix(Int(foundCount)).map { ObjectHandle(rawValue: UInt($0)) }
        }
    }

    // MARK: Output buffers

    /// Fetches output into a buffer of `knownLength` when the mechanism fixes it (AES-GCM: NSS's size query
    /// under-reports GCM output and a short buffer ends its operation), else by the two-call convention.
    private func output(
        _ function: PKCS11Error.Function, knownLength: Int?,
        _ body: (UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<CK_ULONG>) -> CK_RV?
    ) throws(PKCS11Error) -> [UInt8] {
        guard let knownLength else { return try twoCallOutput(function, body) }
        var output = [UInt8](repeating: 0, count: max(knownLength, 1))
        var produced = CK_ULONG(output.count)
        try call(function) { output.withUnsafeMutableBufferPointer { body($0.baseAddress, &produced) } }
        return Array(output.prefix(Int(produced)))
    }

    /// The two-call convention: ask for the length, then fetch. A size query leaves the operation active, so
    /// the second call always follows. `CKR_BUFFER_TOO_SMALL` is retried with the length the token then reports,
    /// or with a larger buffer when it reports none (NSS under-reports some sizes, such as RFC 5649 wrap output).
    private func twoCallOutput(
        _ function: PKCS11Error.Function, _ body: (UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<CK_ULONG>) -> CK_RV?
    ) throws(PKCS11Error) -> [UInt8] {
        var length: CK_ULONG = 0
        try call(function) { body(nil, &length) }
        for attempt in 0..<4 {
            var output = [UInt8](repeating: 0, count: max(Int(length), 1))
            var produced = CK_ULONG(output.count)
            do {
                try call(function) { output.withUnsafeMutableBufferPointer { body($0.baseAddress, &produced) } }
                return Array(output.prefix(Int(produced)))
            } catch where error.returnValue == .bufferTooSmall && attempt < 3 {
                length = produced > length ? produced : length * 2 + 64
            }
        }
        throw PKCS11Error(.bufferTooSmall, in: function, detail: "the token kept asking for a larger buffer")
    }
}
