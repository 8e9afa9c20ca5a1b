import Foundation
import HTTPTypes
import Hummingbird
import KMS
import KMSAudit
import KMSHSM
import KMSSQLite
import Logging
import Metrics
import NIOCore
import Prometheus
import Synchronization

/// The process's metrics registry, scraped by `GET /metrics`. Every `trent_*` series of every module is made through
/// swift-metrics, so they all land here once ``bootstrap()`` ran (before anything else of `trent serve`).
enum TrentMetrics {
    static let registry = PrometheusCollectorRegistry()

    /// Buckets in seconds from 100 µs (a software token's PKCS#11 call) to 10 s (the default HSM deadline).
    static let durationBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    private static let bootstrapped: Void = {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        factory.valueHistogramBuckets["trent_audit_batch_records"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        MetricsSystem.bootstrap(factory)
    }()

    /// Points swift-metrics at the registry; once per process (a second call does nothing).
    static func bootstrap() { _ = bootstrapped }
}

/// `GET /ready`'s checks, each bounded by ``deadline``, run together:
/// - api: the API listener accepts requests (not once its graceful shutdown began);
/// - token: the token answers `C_GetSessionInfo` logged in, through its own threads (``HSMToken/checkReadiness(timeout:)``);
/// - store: one tiny committed write to the heartbeat table (``SQLiteMetadataStore/writeHeartbeat()``);
/// - audit: the trail is open, its last write succeeded and its file is writable (no record is added).
struct Readiness: Sendable {
    let token: HSMToken
    let store: SQLiteMetadataStore
    let trail: AuditTrail
    let draining: Draining
    static let deadline = Duration.seconds(2)

    struct Check: Encodable, Sendable {
        var ready: Bool
        var detail: String
    }

    struct Report: Encodable, Sendable {
        var ready: Bool
        var checks: [String: Check]
    }

    func evaluate() async -> Report {
        let (token, store, trail) = (self.token, self.store, self.trail)
        async let tokenProblem = Self.bounded { await token.checkReadiness(timeout: Self.deadline) }
        async let storeProblem = Self.bounded {
            do {
                try await store.writeHeartbeat()
                return nil
            } catch let error as KMSError {
                return error.cause.map { "\(error.message) (\($0))" } ?? error.message
            } catch {
                return "the store could not be written: \(error)"
            }
        }
        async let auditProblem = Self.bounded { await trail.readinessProblem() }
        let checks = [
            "api": draining.hasBegun
                ? Check(ready: false, detail: "shutting down: no new connections, requests in flight finishing")
                : Check(ready: true, detail: "accepting requests"),
            "token": Self.check(await tokenProblem, ready: "logged in and answering (\(token.state.rawValue))"),
            "store": Self.check(await storeProblem, ready: "a write committed"),
            "audit": Self.check(await auditProblem, ready: "open and writable"),
        ]
        return Report(ready: checks.values.allSatisfy(\.ready), checks: checks)
    }

    private static func check(_ problem: String?, ready detail: String) -> Check {
        problem.map { Check(ready: false, detail: $0) } ?? Check(ready: true, detail: detail)
    }

    /// Runs `work` in a task of its own and waits for it at most ``deadline``: a check stuck on a hung disk or token
    /// answers "no answer" in time, while its task ends on its own (the token's and the store's own deadlines bound it).
    private static func bounded(_ work: @escaping @Sendable () async -> String?) async -> String? {
        let answer = OneAnswer()
        return await withCheckedContinuation { continuation in
            answer.attach(continuation)
            let worker = Task { answer.give(await work()) }
            Task {
                try? await Task.sleep(for: deadline)
                if answer.give("no answer within \(deadline)") { worker.cancel() }
            }
        }
    }

    /// The first of the work's answer and the timeout's resumes the waiting probe; the other is dropped.
    private final class OneAnswer: Sendable {
        private let continuation = Mutex<CheckedContinuation<String?, Never>?>(nil)
        func attach(_ waiting: CheckedContinuation<String?, Never>) { continuation.withLock { $0 = waiting } }
        @discardableResult
        func give(_ problem: String?) -> Bool {
            let waiting = continuation.withLock { waiting in
                defer { waiting = nil }
                return waiting
            }
            waiting?.resume(returning: problem)
            return waiting != nil
        }
    }
}

/// The admin listener (`admin.host`/`admin.port`, plain HTTP, loopback by default): `GET /health`, `GET /ready` and
/// `GET /metrics`, nothing else (404). Apart from the API's listener so that a scraper or a probe never needs API
/// credentials, and the API's clients never see metrics. It answers while the token is unavailable: nothing here
/// waits on the token beyond the readiness check's deadline.
struct AdminServer {
    static let jsonContentType = "application/json"
    static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    let readiness: Readiness
    let registry: PrometheusCollectorRegistry

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/health") { _, _ in
            Self.respond(.ok, contentType: Self.jsonContentType, body: Array(#"{"status":"ok"}"#.utf8))
        }
        router.get("/ready") { _, _ in
            let report = await readiness.evaluate()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let body = (try? encoder.encode(report)).map { Array($0) } ?? Array(#"{"ready":false}"#.utf8)
            return Self.respond(report.ready ? .ok : .serviceUnavailable, contentType: Self.jsonContentType, body: body)
        }
        router.get("/metrics") { _, _ in
            Self.respond(.ok, contentType: Self.prometheusContentType, body: registry.emitToBuffer())
        }
        return router
    }

    func application(host: String, port: Int, logger: Logger) -> some ApplicationProtocol {
        Application(
            router: router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "Trent-admin"),
            onServerRunning: { _ in
                logger.info("admin listener serving /health, /ready and /metrics", metadata: ["admin.endpoint": "http://\(host):\(port)"])
            },
            logger: logger)
    }

    private static func respond(_ status: HTTPResponse.Status, contentType: String, body: [UInt8]) -> Response {
        Response(
            status: status, headers: [.contentType: contentType, .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
