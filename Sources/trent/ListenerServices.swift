import Foundation
import KMSServer
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// On SIGHUP, reads the TLS certificate and key files again: new handshakes get the new chain, open connections
/// keep theirs. A file that does not load is refused with one log line and the chain in use stays. Without TLS a
/// SIGHUP is logged and ignored (its default action would end the process).
struct CertificateReloader: Service {
    let certificate: ServerCertificate?
    let logger: Logger

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            guard let certificate else {
                logger.notice("SIGHUP: TLS is off, nothing to reload")
                continue
            }
            do {
                try certificate.reload()
                logger.notice(
                    "SIGHUP: reloaded the TLS certificate; new connections use it",
                    metadata: ["tls.serial": "\(certificate.serialNumber)", "tls.certificateFile": "\(certificate.certificateFile)"])
            } catch let error as TLSFileError {
                logger.error(
                    "SIGHUP: TLS certificate reload refused, still serving the previous certificate: \(error.description)",
                    metadata: ["tls.serial": "\(certificate.serialNumber)"])
            }
        }
    }
}

/// Runs the API listener and bounds its graceful shutdown. When shutdown starts, Hummingbird closes the listening
/// socket and idle keep-alive connections at once and closes each busy connection after its response; requests
/// in flight then have `grace` to finish. Past it the listener is cancelled (its connections closed), and should
/// anything still hold the process `closing` later, it exits with status 1: every answered request is already
/// durable in the store and the audit trail, and what is lost is the final digest, as after a crash.
struct BoundedShutdown: Service {
    let listener: any Service
    let grace: Duration
    let closing: Duration
    /// Set when the shutdown starts, so that `/ready` says the API is draining while requests finish.
    let draining: Draining
    let logger: Logger

    /// After the grace period: for the audit trail's final digest and the token's close.
    static let closingTime = Duration.seconds(5)

    private enum Outcome { case listenerEnded, graceExpired, stopped }

    func run() async throws {
        try await withThrowingTaskGroup(of: Outcome.self) { group in
            group.addTask {
                try await listener.run()
                return .listenerEnded
            }
            group.addTask {
                do {
                    try await gracefulShutdown()
                } catch {
                    return .stopped
                }
                draining.begin()
                logger.notice(
                    "shutting down: no new connections; requests in flight have \(grace.components.seconds) s to finish")
                Self.startWatchdog(after: grace + closing, logger: logger)
                do {
                    try await Task.sleep(for: grace)
                } catch {
                    return .stopped
                }
                return .graceExpired
            }
            var expired = false
            while true {
                let outcome: Outcome?
                do {
                    outcome = try await group.next()
                } catch where expired {
                    // A listener cancelled past its grace may end with an error; the shutdown goes on.
                    logger.debug("the API listener ended with an error after its grace period", metadata: ["error": "\(error)"])
                    continue
                }
                switch outcome {
                case .listenerEnded?, nil:
                    group.cancelAll()
                    return
                case .graceExpired?:
                    expired = true
                    logger.warning("shutdown grace period over: closing the connections of requests still in flight")
                    group.cancelAll()
                case .stopped?:
                    continue
                }
            }
        }
    }

    /// The last resort: a thread that ends the process if the shutdown is not done by then (a token call that
    /// never returns, say). `_exit` rather than `exit`, so that no atexit handler races a thread still in the token.
    private static func startWatchdog(after bound: Duration, logger: Logger) {
        let thread = Thread {
            Thread.sleep(forTimeInterval: Double(bound.components.seconds))
            logger.critical("shutdown did not finish within \(bound.components.seconds) s; exiting now")
            _exit(1)
        }
        thread.start()
    }
}

/// Whether the API listener's graceful shutdown has begun: from then on it accepts no connection, and `/ready`
/// answers 503 so that a load balancer that polls it (rather than one told by an orchestrator) stops sending.
final class Draining: Sendable {
    private let started = Atomic<Bool>(false)
    func begin() { started.store(true, ordering: .relaxed) }
    var hasBegun: Bool { started.load(ordering: .relaxed) }
}
