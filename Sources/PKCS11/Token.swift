internal import CPKCS11
import CoreMetrics
import Synchronization

/// A token found by label and logged in once for the life of the process, lending sessions from a pool.
///
/// One long-lived session stays open as long as the token: closing the last session would log the process
/// out, and session objects die with the session that created them, so objects that must outlive a pooled
/// session (unwrapped working keys) are created through ``withLongLivedSession(_:)``.
public final class Token: Sendable {
    public let module: PKCS11Module
    public let slot: SlotID
    public let label: String
    private let functions: FunctionList
    private let longLived: Mutex<CK_SESSION_HANDLE>
    private let idle = Mutex<[CK_SESSION_HANDLE]>([])
    /// Set by ``retire()``: no session is lent any more.
    private let retired = Atomic<Bool>(false)
    private let maxIdleSessions: Int
    /// How this token does AES-GCM (from its HSM profile); every lent session carries it.
    public let gcm: GCMConvention
    /// Sessions lent out now (`trent_pkcs11_sessions_in_use`, by token label; a replacement connection shares it).
    private let sessionsInUse: Meter

    /// Finds the token labelled `label` and logs in with `pin`.
    /// - Throws: `CKR_TOKEN_NOT_PRESENT` from `C_GetSlotList` when no initialised token has that label,
    ///   `CKR_PIN_INCORRECT` from `C_Login` for a wrong PIN.
    public init(
        module: PKCS11Module, label: String, pin: PIN, maxIdleSessions: Int = 64, gcm: GCMConvention = GCMConvention()
    ) throws(PKCS11Error) {
        guard let slot = try module.slot(forTokenLabel: label) else {
            throw PKCS11Error(.tokenNotPresent, in: .getSlotList, detail: "no initialised token is labelled '\(label)'")
        }
        let session = try Session.open(functions: module.functions, slot: slot)
        do {
            try session.login(pin: pin)
        } catch {
            session.close()
            throw error
        }
        self.module = module
        self.slot = slot
        self.label = label
        self.functions = module.functions
        self.longLived = Mutex(session.handle)
        self.maxIdleSessions = maxIdleSessions
        self.gcm = gcm
        self.sessionsInUse = Meter(label: "trent_pkcs11_sessions_in_use", dimensions: [("token", label)])
    }

    /// Lends a session to `body` for its exclusive use. Blocking: call it from a thread that may block
    /// (the HSM thread pool), never from the cooperative pool.
    public func withSession<R>(_ body: (borrowing Session) throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        let session = try checkOut()
        sessionsInUse.increment()
        defer { sessionsInUse.decrement() }
        do {
            let result = try body(session)
            checkIn(session)
            return result
        } catch {
            // After any failure an operation may still be active, or the session may be dead: never lend it again.
            // (Failures are rare, and a session costs one C_OpenSession.)
            session.close()
            throw error
        }
    }

    /// Runs `body` on the session that lives as long as the token, serialised with every other caller.
    public func withLongLivedSession<R: Sendable>(_ body: (borrowing Session) throws(PKCS11Error) -> R) throws(PKCS11Error) -> R {
        let functions = self.functions
        let gcm = self.gcm
        let result: Result<R, PKCS11Error> = longLived.withLock { handle in
            let session = Session(functions: functions, handle: handle, gcm: gcm)
            do throws(PKCS11Error) { return .success(try body(session)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Closes every session this process has with the token (`C_CloseAllSessions`), which logs it out and
    /// destroys its session objects. The token is unusable afterwards; sessions lent meanwhile fail.
    public func close() {
        idle.withLock { $0.removeAll() }
        _ = functions.list.C_CloseAllSessions?(CK_SLOT_ID(slot))
    }

    /// Closes this connection's own sessions one by one (never `C_CloseAllSessions`, which would also end a
    /// replacement's) and refuses to lend any more: the token is being logged in again after a fault, and
    /// object handles found through this connection must not meet sessions of the next one.
    /// After a module reset (`closingSessions` false) the old handle numbers may already name new sessions: they
    /// are only forgotten.
    public func retire(closingSessions: Bool = true) {
        retired.store(true, ordering: .sequentiallyConsistent)
        let handles = idle.withLock { sessions in
            defer { sessions.removeAll() }
            return sessions
        }
        guard closingSessions else { return }
        for handle in handles { _ = functions.list.C_CloseSession?(handle) }
        longLived.withLock { handle in _ = functions.list.C_CloseSession?(handle) }
    }

    /// Whether the long-lived session still exists and is logged in as the user: the cheap check that tells a fault
    /// of one call (a device error on one session) from a token that lost its sessions (a reboot, a removal).
    public func isLoggedIn() -> Bool {
        longLived.withLock { handle in
            var info = CK_SESSION_INFO()
            do {
                try call(.getSessionInfo) { functions.list.C_GetSessionInfo?(handle, &info) }
            } catch {
                return false
            }
            return info.state == CK_STATE(CKS_RW_USER_FUNCTIONS) || info.state == CK_STATE(CKS_RO_USER_FUNCTIONS)
        }
    }

    /// Number of sessions waiting in the pool (for tests and metrics).
    public var idleSessionCount: Int { idle.withLock { $0.count } }

    private func checkOut() throws(PKCS11Error) -> Session {
        guard !retired.load(ordering: .sequentiallyConsistent) else {
            throw PKCS11Error(.sessionClosed, in: .openSession, detail: "this connection to the token was replaced after a fault")
        }
        if let handle = idle.withLock({ $0.popLast() }) {
            return Session(functions: functions, handle: handle, gcm: gcm)
        }
        return try Session.open(functions: functions, slot: slot, gcm: gcm)
    }

    private func checkIn(_ session: borrowing Session) {
        let handle = session.handle
        let kept = idle.withLock { sessions -> Bool in
            guard sessions.count < maxIdleSessions else { return false }
            sessions.append(handle)
            return true
        }
        if !kept || retired.load(ordering: .sequentiallyConsistent) { session.close() }
    }
}
