internal import CPKCS11

/// A slot number. Slot numbers are not stable (SoftHSM renumbers them when a token is initialised), so
/// Trent finds slots by token label and never stores them.
public typealias SlotID = UInt

/// What `C_GetTokenInfo` says about a token.
public struct TokenInfo: Sendable {
    public var label: String
    public var manufacturer: String
    public var model: String
    public var serialNumber: String
    public var isInitialized: Bool
    public var isUserPINInitialized: Bool
    public var isLoginRequired: Bool
}

/// A PKCS#11 module loaded by path and initialised for multi-threaded use.
public final class PKCS11Module: Sendable {
    public let path: String
    private let initString: String?
    let functions: FunctionList
    /// False when another part of the process had already initialised the module: we then must not finalise it.
    private let ownsInitialization: Bool

    /// Loads the module and calls `C_Initialize` with `CKF_OS_LOCKING_OK` (without it SoftHSM disables its
    /// internal locks and crashes under concurrency).
    /// - Parameter initString: passed in `pReserved` (NSS softoken needs `configdir=...` there).
    public init(path: String, initString: String? = nil) throws(PKCS11Error) {
        guard let library = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw PKCS11Error(.generalError, in: .loadModule, detail: "cannot load PKCS#11 module \(path): \(reason)")
        }
        guard let symbol = dlsym(library, "C_GetFunctionList") else {
            dlclose(library)
            throw PKCS11Error(.functionNotSupported, in: .getFunctionList, detail: "\(path) exports no C_GetFunctionList")
        }
        let getFunctionList = unsafeBitCast(symbol, to: CK_C_GetFunctionList.self)
        var table: UnsafeMutablePointer<CK_FUNCTION_LIST>?
        do {
            try call(.getFunctionList) { getFunctionList(&table) }
        } catch {
            dlclose(library)
            throw error
        }
        guard let table else {
            dlclose(library)
            throw PKCS11Error(.generalError, in: .getFunctionList, detail: "\(path) returned no function list")
        }
        let functions = FunctionList(table: table, library: library)

        let owns: Bool
        do {
            owns = try Self.initialize(functions, initString: initString)
        } catch {
            dlclose(library)
            throw error
        }
        self.path = path
        self.initString = initString
        self.functions = functions
        self.ownsInitialization = owns
    }

    /// `C_Initialize` with `CKF_OS_LOCKING_OK`; false when another part of the process had initialised the module.
    private static func initialize(_ functions: FunctionList, initString: String?) throws(PKCS11Error) -> Bool {
        var reserved: [CChar]? = initString.map { Array($0.utf8CString) }
        do {
            try reserved.withOptionalMutablePointer { reservedPointer throws(PKCS11Error) in
                var args = CK_C_INITIALIZE_ARGS(
                    CreateMutex: nil, DestroyMutex: nil, LockMutex: nil, UnlockMutex: nil,
                    flags: CK_FLAGS(CKF_OS_LOCKING_OK), pReserved: reservedPointer.map { UnsafeMutableRawPointer($0) })
                try call(.initialize) { functions.list.C_Initialize?(&args) }
            }
            return true
        } catch where error.returnValue == .cryptokiAlreadyInitialized {
            return false
        }
    }

    /// `C_Finalize` then `C_Initialize` with the same arguments: the last resort when a token stopped answering
    /// (a network HSM lost its connection). Every session, session object and login of the process is gone
    /// afterwards, and handle numbers may be reused: the caller must drop every handle it holds. No other thread
    /// may be inside the module meanwhile.
    public func reinitialize() throws(PKCS11Error) {
        _ = functions.list.C_Finalize?(nil)
        do {
            _ = try Self.initialize(functions, initString: initString)
        } catch where error.returnValue == .cryptokiAlreadyInitialized {
            return
        }
    }

    /// Calls `C_Finalize`: every session and session object of the process is gone afterwards.
    public func finalize() {
        guard ownsInitialization else { return }
        _ = functions.list.C_Finalize?(nil)
    }

    /// The slots that hold a token.
    public func slotsWithToken() throws(PKCS11Error) -> [SlotID] {
        var count: CK_ULONG = 0
        try call(.getSlotList) { functions.list.C_GetSlotList?(CK_BBOOL(CK_TRUE), nil, &count) }
        var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
        try call(.getSlotList) { functions.list.C_GetSlotList?(CK_BBOOL(CK_TRUE), &slots, &count) }
        return slots.prefix(Int(count)).map { SlotID($0) }
    }

    public func tokenInfo(slot: SlotID) throws(PKCS11Error) -> TokenInfo {
        var info = CK_TOKEN_INFO()
        try call(.getTokenInfo) { functions.list.C_GetTokenInfo?(CK_SLOT_ID(slot), &info) }
        return TokenInfo(
            label: paddedString(info.label), manufacturer: paddedString(info.manufacturerID),
            model: paddedString(info.model), serialNumber: paddedString(info.serialNumber),
            isInitialized: info.flags & CK_FLAGS(CKF_TOKEN_INITIALIZED) != 0,
            isUserPINInitialized: info.flags & CK_FLAGS(CKF_USER_PIN_INITIALIZED) != 0,
            isLoginRequired: info.flags & CK_FLAGS(CKF_LOGIN_REQUIRED) != 0)
    }

    /// The slot whose token carries `label`, or nil. By default only initialised tokens count (SoftHSM shows a
    /// free, uninitialised token too); NSS softoken's key database reports itself initialised only once it has a PIN.
    public func slot(forTokenLabel label: String, requireInitialized: Bool = true) throws(PKCS11Error) -> SlotID? {
        for slot in try slotsWithToken() {
            let info = try tokenInfo(slot: slot)
            if (info.isInitialized || !requireInitialized) && info.label == label { return slot }
        }
        return nil
    }

    /// A slot whose token is not initialised yet (SoftHSM always offers one), or nil.
    public func uninitializedSlot() throws(PKCS11Error) -> SlotID? {
        for slot in try slotsWithToken() where try !tokenInfo(slot: slot).isInitialized {
            return slot
        }
        return nil
    }

    /// Initialises the token in `slot` with `label`, then sets its user PIN: `C_InitToken`, then `C_InitPIN`
    /// from a security-officer session (SoftHSM's way; the HSM profile's `tokenSetup` says which way a token takes).
    public func initializeToken(slot: SlotID, label: String, soPIN: PIN, userPIN: PIN) throws(PKCS11Error) {
        var labelBytes = padded(label, to: 32)
        var so = soPIN.bytes
        try call(.initToken) { functions.list.C_InitToken?(CK_SLOT_ID(slot), &so, CK_ULONG(so.count), &labelBytes) }
        // SoftHSM moves an initialised token to a new slot number: find it again by label.
        guard let initialized = try self.slot(forTokenLabel: label) else {
            throw PKCS11Error(.tokenNotPresent, in: .initToken, detail: "token '\(label)' not found after initialisation")
        }
        try initializeUserPIN(slot: initialized, soPIN: soPIN, userPIN: userPIN)
    }

    /// Sets the user PIN from a security-officer session. NSS softoken's new key database takes this with an
    /// empty SO PIN, once; it has no SO PIN afterwards.
    public func initializeUserPIN(slot: SlotID, soPIN: PIN, userPIN: PIN) throws(PKCS11Error) {
        let session = try Session.open(functions: functions, slot: slot)
        defer { session.close() }
        try session.login(.securityOfficer, pin: soPIN)
        var user = userPIN.bytes
        try call(.initPIN) { functions.list.C_InitPIN?(session.handle, &user, CK_ULONG(user.count)) }
        try session.logout()
    }

    /// The mechanisms the token in `slot` offers.
    public func mechanisms(slot: SlotID) throws(PKCS11Error) -> [MechanismType] {
        var count: CK_ULONG = 0
        try call(.getMechanismList) { functions.list.C_GetMechanismList?(CK_SLOT_ID(slot), nil, &count) }
        var types = [CK_MECHANISM_TYPE](repeating: 0, count: Int(count))
        try call(.getMechanismList) { functions.list.C_GetMechanismList?(CK_SLOT_ID(slot), &types, &count) }
        return types.prefix(Int(count)).map { MechanismType(rawValue: UInt($0)) }
    }
}

/// A PIN. Its description never shows its value, so it cannot leak through string interpolation.
public struct PIN: Sendable, CustomStringConvertible {
    let bytes: [UInt8]
    public init(_ text: String) { self.bytes = Array(text.utf8) }
    public var description: String { "PIN(redacted)" }
    public var isEmpty: Bool { bytes.isEmpty }
}

extension Optional where Wrapped == [CChar] {
    fileprivate mutating func withOptionalMutablePointer<R>(
        _ body: (UnsafeMutablePointer<CChar>?) throws(PKCS11Error) -> R
    ) throws(PKCS11Error) -> R {
        guard var array = self else { return try body(nil) }
        let result: Result<R, PKCS11Error> = array.withUnsafeMutableBufferPointer { buffer in
            do throws(PKCS11Error) { return .success(try body(buffer.baseAddress)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}
