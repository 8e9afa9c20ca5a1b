import Foundation
public import Hummingbird
public import KMS
public import Logging
public import NIOCore
import HTTPTypes

/// The request context: Hummingbird's core storage plus the peer address (for the caller's source IP).
public struct KMSRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }
}

/// The KMS endpoint: `POST /` with `X-Amz-Target: TrentService.<Operation>`, AWS JSON 1.1, SigV4.
///
/// Order of checks, as AWS applies them: body size, authentication, operation name, request shape, then
/// the operation itself. Every response carries `x-amzn-RequestId`; every failure is an AWS error body,
/// never a stack trace.
public struct KMSHTTPServer: Sendable {
    public static let maximumBodySize = 1 << 20
    static let targetPrefix = "TrentService."
    static let requestIDHeader = HTTPField.Name("x-amzn-RequestId")!
    static let targetHeader = HTTPField.Name("X-Amz-Target")!

    static let forwardedAccessKeyHeader = HTTPField.Name("X-Trent-Forwarded-Access-Key")!
    static let forwardedDateHeader = HTTPField.Name("X-Trent-Forwarded-Date")!
    static let forwardedSignatureHeader = HTTPField.Name("X-Trent-Forwarded-Signature")!

    let service: KeyManagementService
    let verifier: SigV4Verifier
    let operations: [String: Operation]
    let audit: (any AuditSink)?
    let logger: Logger

    /// - Parameter audit: receives one CloudTrail record per request, allowed or denied, successful or not;
    ///   the response waits until the record is durable.
    public init(service: KeyManagementService, verifier: SigV4Verifier, audit: (any AuditSink)?, logger: Logger) {
        self.service = service
        self.verifier = verifier
        self.operations = service.operations()
        self.audit = audit
        self.logger = logger
    }

    public func router() -> Router<KMSRequestContext> {
        let router = Router(context: KMSRequestContext.self)
        router.post("/") { request, context in
            await self.respond(to: request, context: context)
        }
        return router
    }

    /// What one request did, for the response and the audit record.
    private struct Exchange {
        var body: [UInt8] = []
        var caller: Caller?
        /// The body parsed once, for the operation and for the audit record.
        var request: JSONValue?
        var output: JSONValue?
        var error: KMSError?
    }

    func respond(to request: Request, context: KMSRequestContext) async -> Response {
        let requestID = Self.randomUUID()
        let eventID = Self.randomUUID()
        let received = Date()
        let target = request.headers[Self.targetHeader] ?? ""
        let operationName = target.hasPrefix(Self.targetPrefix) ? String(target.dropFirst(Self.targetPrefix.count)) : target
        // Metadata is attached per message, not set on a Logger copy: a stream handler re-renders its
        // metadata on every set, which cost more than the rest of the logging when nothing is logged.
        func log(_ level: Logger.Level, _ message: Logger.Message, _ metadata: Logger.Metadata = [:]) {
            logger.log(
                level: level, message,
                metadata: metadata.merging(["kms.request.id": "\(requestID)", "kms.operation": "\(operationName)"]) { own, _ in own })
        }

        let resources = AuditResources()
        var exchange = Exchange()
        var status: HTTPResponse.Status?
        await AuditResources.$current.withValue(resources) {
          await RequestTrace.$current.withValue(RequestTrace(requestID: requestID, eventID: eventID)) {
            do {
                do {
                    var buffer = try await request.body.collect(upTo: Self.maximumBodySize)
                    exchange.body = buffer.readBytes(length: buffer.readableBytes) ?? []
                } catch is NIOTooManyBytesError {
                    status = .contentTooLarge
                    throw KMSError(.validation, "The request body exceeds the limit of \(Self.maximumBodySize) bytes.")
                }
                let caller = try await authenticate(request, body: exchange.body, sourceIP: context.remoteAddress?.ipAddress)
                exchange.caller = caller
                guard target.hasPrefix(Self.targetPrefix), let operation = operations[operationName] else {
                    throw KMSError(.unknownOperation, "Unknown operation \(target.isEmpty ? "(no X-Amz-Target header)" : target)")
                }
                let json = try AWSJSON.parseBody(exchange.body)
                exchange.request = json
                exchange.output = try await operation.handle(json, caller)
            } catch let error as KMSError {
                exchange.error = error
            } catch {
                log(.error, "unexpected failure", ["error": "\(error)"])
                exchange.error = KMSError(.internalFailure, "An internal error occurred; the request can be retried.")
            }
          }
        }
        if let error = exchange.error {
            if logger.logLevel <= .info {
                log(.info, "request failed", ["kms.error": "\(error.code)", "kms.error.message": "\(error.message)"])
            }
            if let cause = error.cause { log(.error, "cause of the failure", ["kms.error.cause": "\(cause)"]) }
        }

        if let audit {
            let record = CloudTrailRecord(
                operation: operationName, requestID: requestID, eventID: eventID, eventTime: received, region: service.location.region,
                caller: exchange.caller, claimedAccessKeyID: exchange.caller == nil ? Self.claimedAccessKeyID(request) : nil,
                sourceIP: context.remoteAddress?.ipAddress, userAgent: request.headers[.userAgent],
                // A request refused before its body was read (authentication) still shows what it asked for.
                request: exchange.request ?? (try? JSONValue.parse(exchange.body)), response: exchange.output, error: exchange.error,
                resources: resources.resources)
            do {
                try await audit.append(canonicalRecord: record.canonicalBytes)
            } catch {
                // Nothing is acknowledged that the trail did not record.
                log(.error, "the audit trail could not record a request; refusing it", ["error": "\(error)"])
                return Self.errorResponse(
                    KMSError(.internalFailure, "The request could not be recorded in the audit trail; it can be retried."), requestID: requestID)
            }
        }
        if let error = exchange.error {
            return Self.errorResponse(error, status: status, requestID: requestID)
        }
        return Self.response(.ok, body: exchange.output?.canonicalBytes ?? [], requestID: requestID)
    }

    /// Verifies the signature, then, when an integrated service calls on behalf of a principal, that
    /// principal's forwarded signature: the request then runs as that principal, with `kms:ViaService` set.
    private func authenticate(_ request: Request, body: [UInt8], sourceIP: String?) async throws -> Caller {
        let (credential, signedHeaders) = try await verifier.verifyReturningSignedHeaders(signedRequest(request, body: body))
        let userAgent = request.headers[.userAgent]
        guard let forwardedKey = request.headers[Self.forwardedAccessKeyHeader] else {
            return Caller(
                accountID: credential.accountID, principalARN: credential.principalARN, principalKind: credential.principalKind,
                accessKeyID: credential.accessKeyID, sourceIP: sourceIP, userAgent: userAgent)
        }
        guard credential.principalKind == .service else {
            throw KMSError(.accessDenied, "User: \(credential.principalARN) is not an integrated service and cannot call on behalf of another principal.")
        }
        let forwarded = [Self.forwardedAccessKeyHeader, Self.forwardedDateHeader, Self.forwardedSignatureHeader]
        guard forwarded.allSatisfy({ signedHeaders.contains($0.canonicalName) }),
            let date = request.headers[Self.forwardedDateHeader], let signature = request.headers[Self.forwardedSignatureHeader]
        else {
            throw KMSError(.incompleteSignature, "A request on behalf of a principal must carry and sign the X-Trent-Forwarded-* headers.")
        }
        let user = try await verifier.verifyForwardedCaller(
            accessKeyID: forwardedKey, date: date, signature: signature, service: credential.principalARN)
        guard user.principalKind != .service else {
            throw KMSError(.accessDenied, "A service cannot call on behalf of another service.")
        }
        return Caller(
            accountID: user.accountID, principalARN: user.principalARN, principalKind: user.principalKind, accessKeyID: user.accessKeyID,
            sourceIP: sourceIP, userAgent: userAgent, viaService: credential.principalARN)
    }

    /// The access key id named in the Authorization header, for the audit record of a request that failed
    /// authentication.
    private static func claimedAccessKeyID(_ request: Request) -> String? {
        guard let header = request.headers[.authorization], let range = header.range(of: "Credential=") else { return nil }
        return header[range.upperBound...].split(separator: "/").first.map(String.init)
    }

    private func signedRequest(_ request: Request, body: [UInt8]) -> SignedRequest {
        var headers: [String: [String]] = [:]
        for field in request.headers {
            headers[field.name.canonicalName, default: []].append(field.value)
        }
        return SignedRequest(
            method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "",
            host: request.head.authority, headers: headers, body: body)
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

    /// AWS answers client errors with 400 and its own failures with 500 (which SDKs retry).
    static func errorResponse(_ error: KMSError, status: HTTPResponse.Status? = nil, requestID: String) -> Response {
        let status = status ?? (error.code == .internalFailure ? .internalServerError : .badRequest)
        return response(status, body: AWSJSON.errorBody(error), requestID: requestID)
    }

    static func response(_ status: HTTPResponse.Status, body: [UInt8], requestID: String) -> Response {
        Response(
            status: status,
            headers: [.contentType: AWSJSON.contentType, requestIDHeader: requestID],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
