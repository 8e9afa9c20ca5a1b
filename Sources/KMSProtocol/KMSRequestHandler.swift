public import Foundation
public import JSON
public import KMS
public import Logging
import Metrics
import Synchronization

/// One request as it arrived, whatever the HTTP library: what SigV4 covers, the peer, and the body.
public struct KMSRequest: Sendable {
    public var method: String
    public var path: String
    public var query: String
    /// The `Host` header (HTTP/1.1) or `:authority` (HTTP/2).
    public var authority: String?
    /// Header values by lowercase name, in the order received.
    public var headers: [String: [String]]
    public var body: [UInt8]
    public var sourceIP: String?

    public init(
        method: String, path: String, query: String, authority: String?, headers: [String: [String]], body: [UInt8], sourceIP: String?
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.authority = authority
        self.headers = headers
        self.body = body
        self.sourceIP = sourceIP
    }

    /// The first value of a header, by lowercase name.
    public func header(_ name: String) -> String? { headers[name]?.first }

    var signed: SignedRequest {
        SignedRequest(method: method, path: path, query: query, host: authority, headers: headers, body: body)
    }
}

/// The answer to one request: an HTTP status, an AWS JSON 1.1 body and the request id.
public struct KMSResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var requestID: String
    /// `x-amz-retry-after`, in milliseconds (``KMSError/retryAfterMilliseconds``).
    public var retryAfterMilliseconds: Int? = nil
    public static let contentType = AWSJSON.contentType
}

/// The KMS endpoint's logic, independent of the transport: `POST /` with `X-Amz-Target: TrentService.<Operation>`,
/// AWS JSON 1.1, SigV4.
///
/// Order of checks, as AWS applies them: body size, authentication, operation name, request shape, the request
/// quota (``RequestQuotas``), then the operation itself. Every response carries a request id; every failure is an
/// AWS error body, never a stack trace.
/// Every request, refused or not, gets one audit record, and is answered only once that record is durable.
public struct KMSRequestHandler: Sendable {
    static let targetPrefix = "TrentService."

    public static let forwardedAccessKeyHeader = "x-trent-forwarded-access-key"
    public static let forwardedDateHeader = "x-trent-forwarded-date"
    public static let forwardedSignatureHeader = "x-trent-forwarded-signature"

    let service: KeyManagementService
    let verifier: SigV4Verifier
    let operations: [String: Operation]
    let audit: (any AuditSink)?
    let quotas: RequestQuotas?
    let logger: Logger
    let metrics: RequestMetrics

    /// - Parameter audit: receives one CloudTrail record per request, allowed or denied, successful or not;
    ///   the response waits until the record is durable.
    /// - Parameter quotas: the request quotas; nil means none.
    public init(
        service: KeyManagementService, verifier: SigV4Verifier, audit: (any AuditSink)?, quotas: RequestQuotas? = nil, logger: Logger
    ) {
        self.service = service
        self.verifier = verifier
        self.operations = service.operations()
        self.audit = audit
        self.quotas = quotas
        self.logger = logger
        self.metrics = RequestMetrics(operations: operations.keys)
    }

    /// What one request did, for the response and the audit record.
    private struct Exchange {
        var caller: Caller?
        /// The body parsed once, for the operation and for the audit record.
        var request: JSONValue?
        var output: JSONValue?
        var error: KMSError?
        var status: Int?
    }

    /// Answers a request whose body was read in full.
    public func handle(_ request: KMSRequest) async -> KMSResponse {
        await respond(to: request, refusal: nil)
    }

    /// Answers (and audits) a request refused before its body could be read: too large, or badly framed.
    /// - Parameter status: the HTTP status for the refusal (413 for a body over the limit, 400 otherwise).
    public func refuse(_ request: KMSRequest, with error: KMSError, status: Int) async -> KMSResponse {
        await respond(to: request, refusal: (error, status))
    }

    private func respond(to request: KMSRequest, refusal: (error: KMSError, status: Int)?) async -> KMSResponse {
        let requestID = Self.randomUUID()
        let eventID = Self.randomUUID()
        let received = Date()
        let target = request.header("x-amz-target") ?? ""
        let operationName = target.hasPrefix(Self.targetPrefix) ? String(target.dropFirst(Self.targetPrefix.count)) : target
        let started = ContinuousClock.now
        // The AWS error code the request is answered with; nil for success.
        var outcome: KMSError.Code?
        defer { metrics.record(target.hasPrefix(Self.targetPrefix) ? operationName : "", outcome: outcome, since: started) }
        // Metadata is attached per message, not set on a Logger copy: a stream handler re-renders its
        // metadata on every set, which cost more than the rest of the logging when nothing is logged.
        func log(_ level: Logger.Level, _ message: Logger.Message, _ metadata: Logger.Metadata = [:]) {
            logger.log(
                level: level, message,
                metadata: metadata.merging(["kms.request.id": "\(requestID)", "kms.operation": "\(CloudTrailRecord.bounded(operationName))"]) {
                    own, _ in own
                })
        }

        let resources = AuditResources()
        var exchange = Exchange()
        await AuditResources.$current.withValue(resources) {
            await RequestTrace.$current.withValue(RequestTrace(requestID: requestID, eventID: eventID)) {
                do {
                    if let refusal {
                        exchange.status = refusal.status
                        throw refusal.error
                    }
                    let caller = try await authenticate(request)
                    exchange.caller = caller
                    guard target.hasPrefix(Self.targetPrefix), let operation = operations[operationName] else {
                        throw KMSError(.unknownOperation, "Unknown operation \(target.isEmpty ? "(no X-Amz-Target header)" : CloudTrailRecord.bounded(target))")
                    }
                    let json = try AWSJSON.parseBody(request.body)
                    exchange.request = json
                    exchange.output = try await withQuota(operation: operationName, request: json, caller: caller) {
                        try await operation.handle(json, caller)
                    }
                } catch let error as KMSError {
                    exchange.error = error
                } catch {
                    log(.error, "unexpected failure", ["error": "\(error)"])
                    exchange.error = KMSError(.internalFailure, "An internal error occurred; the request can be retried.")
                }
            }
        }
        outcome = exchange.error?.code
        if let error = exchange.error {
            // One line per failed request, at info: the HSM's faults and recoveries are logged where they happen, once per
            // change of its state (HSMToken), not once per request they fail.
            if logger.logLevel <= .info {
                var metadata: Logger.Metadata = ["kms.error": "\(error.code)", "kms.error.message": "\(CloudTrailRecord.bounded(error.message, limit: 1024))"]
                if let cause = error.cause { metadata["kms.error.cause"] = "\(cause)" }
                if let caller = exchange.caller { metadata["kms.principal"] = "\(caller.principalARN)" }
                log(.info, "request failed", metadata)
            }
        } else if logger.logLevel <= .debug {
            // The access log: every successful request at debug, with the same fields as a failure's line.
            var metadata: Logger.Metadata = [:]
            if let caller = exchange.caller { metadata["kms.principal"] = "\(caller.principalARN)" }
            log(.debug, "request succeeded", metadata)
        }

        if let audit {
            let record = CloudTrailRecord(
                operation: operationName, requestID: requestID, eventID: eventID, eventTime: received,
                region: exchange.caller.map(service.location.region(of:)) ?? service.location.region,
                caller: exchange.caller, claimedAccessKeyID: exchange.caller == nil ? Self.claimedAccessKeyID(request) : nil,
                sourceIP: request.sourceIP, userAgent: request.header("user-agent"),
                // Only an authenticated caller's parameters are recorded: an anonymous client must not be able to
                // fill the trail (and the disk) with a megabyte per request.
                request: exchange.caller == nil ? nil : exchange.request, response: exchange.output, error: exchange.error,
                resources: resources.resources)
            do {
                try await audit.append(canonicalRecord: record.canonicalBytes)
            } catch {
                // Nothing is acknowledged that the trail did not record.
                log(.error, "the audit trail could not record a request; refusing it", ["error": "\(error)"])
                outcome = .internalFailure
                return Self.errorResponse(
                    KMSError(.internalFailure, "The request could not be recorded in the audit trail; it can be retried."), requestID: requestID)
            }
        }
        if let error = exchange.error {
            return Self.errorResponse(error, status: exchange.status, requestID: requestID)
        }
        return KMSResponse(status: 200, body: exchange.output?.canonicalBytes ?? [], requestID: requestID)
    }

    /// Runs `body` under the request quota of the caller's account in the request's Region: a quota of the
    /// operation is charged before it runs; a quota of the key's type once the authorizer allowed the key
    /// (``QuotaGate``). An integrated service calling on its own behalf belongs to no account and is counted by
    /// its principal.
    private func withQuota(
        operation: String, request: JSONValue, caller: Caller, _ body: () async throws -> JSONValue?
    ) async throws -> JSONValue? {
        guard let quotas else { return try await body() }
        let account = caller.accountID.isEmpty ? caller.principalARN : caller.accountID
        let region = service.location.region(of: caller)
        let gate: QuotaGate
        switch RequestQuotas.plan(operation: operation, request: request) {
        case .unlimited:
            return try await body()
        case .quota(let name):
            try quotas.charge(account: account, region: region, quota: name)
            return try await body()
        case .byKey:
            gate = QuotaGate(quotas: quotas, account: account, region: region)
        }
        let output: JSONValue?
        do {
            output = try await QuotaGate.$current.withValue(gate) { try await body() }
        } catch {
            if !gate.finish() { throw RequestQuotas.throttled }
            throw error
        }
        _ = gate.finish()
        return output
    }

    /// Verifies the signature, then, when an integrated service calls on behalf of a principal, that
    /// principal's forwarded signature: the request then runs as that principal, with `kms:ViaService` set.
    private func authenticate(_ request: KMSRequest) async throws -> Caller {
        let (credential, signedHeaders, region) = try await verifier.verifyReturningSignedHeaders(request.signed)
        let userAgent = request.header("user-agent")
        guard let forwardedKey = request.header(Self.forwardedAccessKeyHeader) else {
            return Caller(
                accountID: credential.accountID, principalARN: credential.principalARN, principalKind: credential.principalKind,
                accessKeyID: credential.accessKeyID, sourceIP: request.sourceIP, userAgent: userAgent, region: region)
        }
        guard credential.principalKind == .service else {
            throw KMSError(.accessDenied, "User: \(credential.principalARN) is not an integrated service and cannot call on behalf of another principal.")
        }
        let forwarded = [Self.forwardedAccessKeyHeader, Self.forwardedDateHeader, Self.forwardedSignatureHeader]
        guard forwarded.allSatisfy({ signedHeaders.contains($0) }),
            let date = request.header(Self.forwardedDateHeader), let signature = request.header(Self.forwardedSignatureHeader)
        else {
            throw KMSError(.incompleteSignature, "A request on behalf of a principal must carry and sign the X-Trent-Forwarded-* headers.")
        }
        let user = try await verifier.verifyForwardedCaller(
            accessKeyID: forwardedKey, date: date, signature: signature, service: credential.principalARN, region: region)
        guard user.principalKind != .service else {
            throw KMSError(.accessDenied, "A service cannot call on behalf of another service.")
        }
        return Caller(
            accountID: user.accountID, principalARN: user.principalARN, principalKind: user.principalKind, accessKeyID: user.accessKeyID,
            sourceIP: request.sourceIP, userAgent: userAgent, viaService: credential.principalARN, region: region)
    }

    /// The access key id named in the Authorization header, for the audit record of a request that failed
    /// authentication (bounded: it is whatever the client sent).
    private static func claimedAccessKeyID(_ request: KMSRequest) -> String? {
        guard let header = request.header("authorization"), let range = header.range(of: "Credential=") else { return nil }
        return header[range.upperBound...].split(separator: "/").first.map { CloudTrailRecord.bounded(String($0)) }
    }

    /// A random (version 4) UUID in lowercase, from the system's random generator (getrandom), without
    /// Foundation's UUID(), which opens /dev/urandom on every call on Linux.
    static func randomUUID() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = (generator.next() as UInt64, generator.next() as UInt64)
        return withUnsafeMutableBytes(of: &bytes) { raw in
            raw[6] = (raw[6] & 0x0F) | 0x40
            raw[8] = (raw[8] & 0x3F) | 0x80
            let digits = Array("0123456789abcdef".utf8)
            var out: [UInt8] = []
            out.reserveCapacity(36)
            for index in 0..<16 {
                if index == 4 || index == 6 || index == 8 || index == 10 { out.append(UInt8(ascii: "-")) }
                out.append(digits[Int(raw[index] >> 4)])
                out.append(digits[Int(raw[index] & 0x0F)])
            }
            return String(decoding: out, as: UTF8.self)
        }
    }

    static let serverFaults: Set<KMSError.Code> = [.internalFailure, .dependencyTimeout, .keyUnavailable]

    /// AWS answers client errors with 400 and its own failures (the model's faults) with 500, which SDKs retry.
    public static func errorResponse(_ error: KMSError, status: Int? = nil, requestID: String) -> KMSResponse {
        let status = status ?? (serverFaults.contains(error.code) ? 500 : 400)
        return KMSResponse(
            status: status, body: AWSJSON.errorBody(error), requestID: requestID, retryAfterMilliseconds: error.retryAfterMilliseconds)
    }
}

/// Requests by operation and outcome (`trent_requests_total{operation, outcome}`: "ok" or the AWS error code) and
/// their latency from arrival to answer, audit record included (`trent_request_duration_seconds{operation}`).
///
/// Operations are the known table's, "unknown" for any other target, so a client cannot grow the label set; error
/// codes are KMS's own. Each operation's objects are made once, so a successful request touches no lock and no
/// registry; a failed one takes its operation's lock to find the counter of its code.
final class RequestMetrics: Sendable {
    final class PerOperation: Sendable {
        let name: String
        let duration: Metrics.Timer
        let succeeded: Counter
        private let failed = Mutex<[KMSError.Code: Counter]>([:])

        init(name: String) {
            self.name = name
            duration = Metrics.Timer(label: "trent_request_duration_seconds", dimensions: [("operation", name)])
            succeeded = Counter(label: "trent_requests_total", dimensions: [("operation", name), ("outcome", "ok")])
        }

        func counter(for code: KMSError.Code) -> Counter {
            failed.withLock { failed in
                if let counter = failed[code] { return counter }
                let counter = Counter(label: "trent_requests_total", dimensions: [("operation", name), ("outcome", code.rawValue)])
                failed[code] = counter
                return counter
            }
        }
    }

    private let operations: [String: PerOperation]
    private let unknown = PerOperation(name: "unknown")

    init(operations names: some Sequence<String>) {
        var operations: [String: PerOperation] = [:]
        for name in names where operations[name] == nil { operations[name] = PerOperation(name: name) }
        self.operations = operations
    }

    func record(_ operation: String, outcome: KMSError.Code?, since started: ContinuousClock.Instant) {
        let metrics = operations[operation] ?? unknown
        metrics.duration.record(duration: ContinuousClock.now - started)
        (outcome.map(metrics.counter(for:)) ?? metrics.succeeded).increment()
    }
}
