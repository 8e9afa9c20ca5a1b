import CoreMetrics
@preconcurrency import Dispatch
public import KMS
public import Logging
import NIOPosix
public import PKCS11
public import ServiceLifecycle
import Synchronization

/// One logged-in PKCS#11 token, whoever uses it (Trent's own token, or a custom key store's): the one place that
/// runs Cryptoki work, bounds it in time and in number, notices faults, and recovers from them.
///
/// - Every task runs on the token's own thread pool (Cryptoki calls block), under a deadline: a hung call answers
///   its request `DependencyTimeoutException` when the deadline passes, and a task whose deadline passed before
///   it started is not run at all.
/// - Tasks waiting for a thread are bounded (`queueDepth`); one more is shed at once with a retryable error, so
///   a hung token cannot pile up requests without end.
/// - After a failed call the token is checked (one `C_GetSessionInfo` on the long-lived session). A token that
///   lost its sessions or its login (a partition reboot, a removal, a dropped network HSM) is logged in again on
///   a fresh connection, and when that fails the module is finalised and initialised again. Every handle found
///   through the old connection is dropped with it: after a reset, handle numbers are reused.
/// - Its ``state`` is `ready`, `degraded` (faults were seen but it answers, or calls overran the deadline) or
///   `unavailable` (it cannot be logged in; requests fail at once and the ``run()`` loop retries every second).
///   Each change is logged once, saying why; requests are not.
public final class HSMToken: Service, Sendable {
    public enum State: String, Sendable {
        case ready, degraded, unavailable
    }

    public struct Settings: Sendable {
        /// How logs name it ("token 'trent'", "custom key store cks-…").
        public var name: String
        public var label: String
        public var pin: PIN
        public var profile: HSMProfile
        public var threads: Int
        /// Tasks that may wait for a thread beyond those running.
        public var queueDepth: Int
        /// The deadline of each task (a few Cryptoki calls); the profile's `deadlines.callSeconds` by default.
        public var callTimeout: Duration
        public var maxIdleSessions: Int
        /// Capacity of each login's working-key caches.
        public var handleCacheCapacity: Int
        /// Whether closing this token finalises the module (Trent's own token does; custom key stores share it).
        public var finalizesModule: Bool

        public init(
            name: String, label: String, pin: PIN, profile: HSMProfile, threads: Int, queueDepth: Int = 256,
            callTimeout: Duration? = nil, maxIdleSessions: Int = 64, handleCacheCapacity: Int = 10_000, finalizesModule: Bool = true
        ) {
            self.name = name
            self.label = label
            self.pin = pin
            self.profile = profile
            self.threads = max(1, threads)
            self.queueDepth = max(0, queueDepth)
            self.callTimeout = callTimeout ?? profile.callDeadline
            self.maxIdleSessions = maxIdleSessions
            self.handleCacheCapacity = handleCacheCapacity
            self.finalizesModule = finalizesModule
        }
    }

    /// What a login finds or makes in the token before serving (Trent's domain and sealing keys); a throw fails the login.
    public typealias Preparation = @Sendable (Login) throws -> Void

    /// One connection to the token: its sessions and every handle found or made through it. A recovery replaces it
    /// whole, so a handle can never meet a session of another connection.
    public final class Login: Sendable {
        public let token: Token
        let moduleGeneration: Int
        /// What this token answers for a failed AES-GCM tag (its profile's `authenticationFailureCodes`).
        let tagFailures: Set<PKCS11Error.ReturnValue>
        private let objects = Mutex<[ObjectName: ObjectHandle]>([:])
        /// Working copies of backing keys, unwrapped from their EKTs.
        let workingKeys: HandleCache
        /// Session objects of asymmetric keys' public halves.
        let publicKeys: HandleCache

        init(token: Token, moduleGeneration: Int, tagFailures: Set<PKCS11Error.ReturnValue>, cacheCapacity: Int) {
            self.token = token
            self.moduleGeneration = moduleGeneration
            self.tagFailures = tagFailures
            self.workingKeys = HandleCache(capacity: cacheCapacity, metrics: .workingKeys)
            self.publicKeys = HandleCache(capacity: cacheCapacity, metrics: .publicKeys)
        }

        public enum ObjectName: Hashable, Sendable {
            case domainKey, sealingKey
            case tokenObject(TokenObjectSelector)
        }

        func object(_ name: ObjectName) -> ObjectHandle? { objects.withLock { $0[name] } }
        func setObject(_ handle: ObjectHandle?, for name: ObjectName) { objects.withLock { $0[name] = handle } }
        /// Drops `name` if it still is `handle` (a stale handle another thread may have replaced already).
        func dropObject(_ name: ObjectName, ifHandle handle: ObjectHandle) {
            objects.withLock { if $0[name] == handle { $0[name] = nil } }
        }
    }

    public let settings: Settings
    let shared: SharedModule
    private let prepare: Preparation
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let current: Mutex<Login?>
    /// Serialises recoveries of this token.
    private let recovering = Mutex<Void>(())
    private let inFlight = Atomic<Int>(0)
    private let health: Mutex<Health>

    private struct Health {
        var state = State.ready
        var since = ContinuousClock.now
        var lastFault: ContinuousClock.Instant?
        var lastRecoveryAttempt: ContinuousClock.Instant?
    }

    /// How long without a fault before a degraded token counts as ready again.
    static let quietPeriod = Duration.seconds(5)
    /// How often an unavailable token is tried again.
    static let recoveryInterval = Duration.seconds(1)

    public var module: PKCS11Module { shared.module }

    /// Logs in (running `prepare`) and starts the token's thread pool.
    /// - Throws: the login's `PKCS11Error`, or whatever `prepare` throws (an ``HSMSetupError`` for missing keys).
    public init(module: PKCS11Module, settings: Settings, logger: Logger, prepare: @escaping Preparation = { _ in }) throws {
        self.shared = SharedModule.adopt(module)
        self.settings = settings
        self.prepare = prepare
        self.logger = logger
        self.health = Mutex(Health())
        var gauges: [State: Meter] = [:]
        for state in [State.ready, .degraded, .unavailable] {
            gauges[state] = Meter(label: "trent_token_state", dimensions: [("token", settings.name), ("state", state.rawValue)])
        }
        self.stateGauges = gauges
        self.threadPool = NIOThreadPool(numberOfThreads: settings.threads)
        self.current = Mutex(nil)
        let login = try shared.gate.withWriteLock { () throws -> Login in try self.logIn() }
        current.withLock { $0 = login }
        threadPool.start()
        publish(.ready)
    }

    public var state: State { health.withLock { $0.state } }

    /// `trent_token_state{token, state}`: 1 for the current state, 0 for the others.
    private let stateGauges: [State: Meter]

    private func publish(_ state: State) {
        for (each, gauge) in stateGauges { gauge.set(each == state ? 1 : 0) }
    }

    /// The readiness probe: nil when the token answers `C_GetSessionInfo` on its long-lived session, logged in, within
    /// `timeout`; otherwise why not. Runs on the token's own threads like any task, so a hung token times out here too,
    /// and a token found logged out is recovered as after a failed request.
    public func checkReadiness(timeout: Duration) async -> String? {
        if state == .unavailable { return "the token is unavailable: it cannot be logged in (retrying every second)" }
        do {
            try await perform("answer a readiness check", timeout: timeout) { login in
                guard login.token.isLoggedIn() else {
                    throw PKCS11Error(.userNotLoggedIn, in: .getSessionInfo, detail: "the long-lived session is gone or logged out")
                }
            }
            return nil
        } catch let error as KMSError {
            return error.cause.map { "\(error.message) (\($0))" } ?? error.message
        } catch {
            return "\(error)"
        }
    }

    /// The current connection, for callers that run no task through ``perform(_:answers:_:)`` (setup commands).
    public var login: Login? { current.withLock { $0 } }

    // MARK: Running work

    /// Runs `work` on the token's thread pool with the current login, within the deadline, and translates what
    /// fails: `answers` turns failures that answer the request (a curve the token lacks) into the caller's error;
    /// a ``KMSError`` thrown by `work` passes through; any other PKCS#11 failure is a retryable
    /// `KMSInternalException` and makes the token check itself.
    /// - Parameter timeout: a deadline shorter than the token's (a readiness probe); nil means `settings.callTimeout`.
    public func perform<R: Sendable>(
        _ what: String, timeout: Duration? = nil, answers: @escaping @Sendable (PKCS11Error) -> KMSError? = { _ in nil },
        _ work: @escaping @Sendable (Login) throws -> R
    ) async throws -> R {
        let limit = settings.threads + settings.queueDepth
        guard inFlight.wrappingAdd(1, ordering: .relaxed).newValue <= limit else {
            inFlight.subtract(1, ordering: .relaxed)
            throw KMSError(.dependencyTimeout, "The HSM is busy: \(limit) requests are already waiting for it; the request can be retried.")
        }
        let timeout = timeout.map { min($0, settings.callTimeout) } ?? settings.callTimeout
        let outcome = OnceResult<R>()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<R, any Error>) in
            outcome.attach(continuation)
            let deadline = DispatchWorkItem { [self] in
                if outcome.resume(
                    with: .failure(KMSError(.dependencyTimeout, "The HSM did not \(what) within \(timeout); the request can be retried.")))
                {
                    noteFault("a call took longer than the deadline (\(timeout)) to \(what)")
                }
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout.dispatchInterval, execute: deadline)
            threadPool.submit { [self] poolState in
                defer { inFlight.subtract(1, ordering: .relaxed) }
                guard poolState == .active else {
                    deadline.cancel()
                    outcome.resume(with: .failure(KMSError(.internalFailure, "The HSM connection is closing; the request can be retried.")))
                    return
                }
                // A task whose request was already answered (its deadline passed while it waited) is not run.
                guard !outcome.isResolved else { return }
                let result = execute(what, answers: answers, work)
                deadline.cancel()
                outcome.resume(with: result)
                if case .success = result { noteSuccess() }
            }
        }
    }

    /// Runs one task on this thread: with the gate held for reading, on the current login, then checks the token if
    /// the task failed, and recovers it (this request still fails) when it lost its sessions or login. Without a
    /// usable login (the token is unavailable, or the module was reset under it) the task fails at once, and a
    /// recovery is tried at most once per ``recoveryInterval``.
    private func execute<R>(_ what: String, answers: @Sendable (PKCS11Error) -> KMSError?, _ work: (Login) throws -> R) -> Result<R, any Error> {
        var login: Login?
        var alive = true
        let result: Result<R, any Error> = shared.gate.withReadLock {
            login = current.withLock { $0 }.flatMap { $0.moduleGeneration == shared.generation ? $0 : nil }
            guard let login else {
                alive = false
                return .failure(PKCS11Error(.cryptokiNotInitialized, in: .openSession, detail: "the token is unavailable: not logged in"))
            }
            let result = Result { try work(login) }
            if case .failure(let error as PKCS11Error) = result, answers(error) == nil { alive = login.token.isLoggedIn() }
            return result
        }
        switch result {
        case .success, .failure(is KMSError):
            return result
        case .failure(let error as PKCS11Error):
            if let answer = answers(error) { return .failure(answer) }
            guard alive else {
                recover(from: login, after: login == nil ? nil : error)
                guard state == .unavailable else {
                    return .failure(KMSError(.internalFailure, "The HSM could not \(what); the request can be retried.", cause: error))
                }
                var unavailable = KMSError(.internalFailure, "The HSM is unavailable; the request can be retried.", cause: error)
                unavailable.retryAfterMilliseconds = Int(Self.recoveryInterval.components.seconds * 1000)
                return .failure(unavailable)
            }
            noteFault("\(error) (the token still answers; that session was closed)")
            return .failure(KMSError(.internalFailure, "The HSM could not \(what); the request can be retried.", cause: error))
        case .failure:
            return result
        }
    }

    // MARK: Recovery

    /// Logs in on a fresh connection, and when that fails re-initialises the module and logs in again; `failed` is
    /// the login the caller saw fail (nothing is done when another thread replaced it already). Blocking.
    private func recover(from failed: Login?, after error: PKCS11Error?) {
        recovering.withLock { _ in
            let latest = current.withLock { $0 }
            if let latest, latest !== failed, latest.moduleGeneration == shared.generation { return }
            if failed == nil, let last = health.withLock({ $0.lastRecoveryAttempt }), ContinuousClock.now - last < Self.recoveryInterval {
                return
            }
            health.withLock { $0.lastRecoveryAttempt = .now }
            let reason = error.map { "\($0)" } ?? "it was unavailable"
            if let error { transition(to: .degraded, reason: "the token lost its sessions or its login (\(error)); logging in again", onlyFrom: .ready) }
            var reset = false
            let recovered: Login? = shared.gate.withWriteLock {
                current.withLock { $0 = nil }
                // After a module reset the old handles may already name other sessions: they are not closed then.
                latest?.token.retire(closingSessions: latest?.moduleGeneration == shared.generation)
                // A fresh login; then the module reset; then one more login, as a fault can also hit a login's own calls.
                if let login = try? logIn() { return login }
                guard (try? shared.reinitialize()) != nil else { return nil }
                reset = true
                return (try? logIn()) ?? (try? logIn())
            }
            current.withLock { $0 = recovered }
            if recovered != nil {
                transition(
                    to: .ready,
                    reason: "\(reset ? "PKCS#11 module re-initialized and " : "")logged in again after \(reason); working keys are unwrapped again on first use")
            } else {
                transition(to: .unavailable, reason: "\(reason); cannot log in again, retrying every \(Self.recoveryInterval)")
            }
        }
    }

    /// A new connection: finds the token by label, logs in, runs the preparation. Call with the gate held for writing.
    private func logIn() throws -> Login {
        let token = try Token(
            module: module, label: settings.label, pin: settings.pin, maxIdleSessions: settings.maxIdleSessions, gcm: settings.profile.gcmConvention)
        let login = Login(
            token: token, moduleGeneration: shared.generation, tagFailures: (try? settings.profile.authenticationFailures()) ?? [],
            cacheCapacity: settings.handleCacheCapacity)
        do {
            try prepare(login)
        } catch {
            token.retire()
            throw error
        }
        return login
    }

    // MARK: State

    private func noteFault(_ reason: String) {
        let degrade = health.withLock { health -> Bool in
            health.lastFault = .now
            return health.state == .ready
        }
        if degrade { transition(to: .degraded, reason: reason) }
    }

    private func noteSuccess() {
        let quiet = health.withLock { health -> Bool in
            guard health.state == .degraded else { return false }
            return health.lastFault.map { ContinuousClock.now - $0 >= Self.quietPeriod } ?? true
        }
        if quiet { transition(to: .ready, reason: "no fault for \(Self.quietPeriod)") }
    }

    /// Logs the change, once; nothing when the state already is `state` (or, with `onlyFrom`, is not that one).
    private func transition(to state: State, reason: String, onlyFrom required: State? = nil) {
        let previous = health.withLock { health -> (State, Duration)? in
            guard health.state != state, required == nil || health.state == required else { return nil }
            defer { (health.state, health.since) = (state, .now) }
            return (health.state, ContinuousClock.now - health.since)
        }
        guard let (from, lasted) = previous else { return }
        publish(state)
        let metadata: Logger.Metadata = [
            "hsm.token": "\(settings.name)", "hsm.state": "\(state.rawValue)", "hsm.previous_state": "\(from.rawValue)",
            "hsm.previous_state_seconds": "\(Double(lasted.components.seconds) + Double(lasted.components.attoseconds) / 1e18)",
            "hsm.reason": "\(reason)",
        ]
        switch state {
        case .ready: logger.notice("HSM token state changed", metadata: metadata)
        case .degraded: logger.warning("HSM token state changed", metadata: metadata)
        case .unavailable: logger.error("HSM token state changed", metadata: metadata)
        }
    }

    // MARK: Service

    /// Until graceful shutdown: retries an unavailable token every second and lets a quiet degraded one count as
    /// ready. Then closes the token: the thread pool, the sessions and (for Trent's own token) the module.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.recoveryInterval)
                await self.monitor()
            }
        }
        await close()
    }

    /// One turn of the monitor: what ``run()`` does every second.
    func monitor() async {
        switch state {
        case .unavailable:
            _ = try? await threadPool.runIfActive { [self] in recover(from: nil, after: nil) }
        case .degraded:
            noteSuccess()
        case .ready:
            break
        }
    }

    /// Stops the thread pool (running tasks finish first), closes the sessions and, for Trent's own token,
    /// finalises the module. Used by ``run()`` and by commands that open the token without a service group.
    public func close() async {
        try? await threadPool.shutdownGracefully()
        let login = current.withLock { login in
            defer { login = nil }
            return login
        }
        login?.token.retire()
        if settings.finalizesModule { module.finalize() }
        // A closed token (a disconnected custom key store) is in no state.
        for gauge in stateGauges.values { gauge.set(0) }
    }
}

extension Duration {
    var dispatchInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(Int(clamping: seconds.multipliedReportingOverflow(by: 1_000_000_000).partialValue + attoseconds / 1_000_000_000))
    }
}

/// A continuation resumed once, by whichever comes first: the task or its deadline.
private final class OnceResult<R: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<R, any Error>?, resolved: Bool)>((nil, false))

    func attach(_ continuation: CheckedContinuation<R, any Error>) {
        state.withLock { $0.continuation = continuation }
    }

    var isResolved: Bool { state.withLock { $0.resolved } }

    /// Returns whether this call resumed it.
    @discardableResult
    func resume(with result: Result<R, any Error>) -> Bool {
        let continuation = state.withLock { state -> CheckedContinuation<R, any Error>? in
            guard !state.resolved else { return nil }
            state.resolved = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
        return continuation != nil
    }
}
