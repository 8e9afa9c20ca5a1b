public import Foundation
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

    let service: KeyManagementService
    let verifier: SigV4Verifier
    let operations: [String: Operation]
    let logger: Logger

    public init(service: KeyManagementService, verifier: SigV4Verifier, logger: Logger) {
        self.service = service
        self.verifier = verifier
        self.operations = service.operations()
        self.logger = logger
    }

    public func router() -> Router<KMSRequestContext> {
        let router = Router(context: KMSRequestContext.self)
        router.post("/") { request, context in
            await self.respond(to: request, context: context)
        }
        return router
    }

    func respond(to request: Request, context: KMSRequestContext) async -> Response {
        let requestID = UUID().uuidString.lowercased()
        let target = request.headers[Self.targetHeader] ?? ""
        let operationName = target.hasPrefix(Self.targetPrefix) ? String(target.dropFirst(Self.targetPrefix.count)) : target
        var logger = self.logger
        logger[metadataKey: "kms.request.id"] = "\(requestID)"
        logger[metadataKey: "kms.operation"] = "\(operationName)"
        do {
            let body: [UInt8]
            do {
                var buffer = try await request.body.collect(upTo: Self.maximumBodySize)
                body = buffer.readBytes(length: buffer.readableBytes) ?? []
            } catch is NIOTooManyBytesError {
                let error = KMSError(.validation, "The request body exceeds the limit of \(Self.maximumBodySize) bytes.")
                logger.info("request refused", metadata: ["kms.error": "\(error.code)", "kms.error.message": "\(error.message)"])
                return Self.errorResponse(error, status: .contentTooLarge, requestID: requestID)
            }
            let credential = try await verifier.verify(signedRequest(request, body: body))
            guard target.hasPrefix(Self.targetPrefix), let operation = operations[operationName] else {
                throw KMSError(.unknownOperation, "Unknown operation \(target.isEmpty ? "(no X-Amz-Target header)" : target)")
            }
            let caller = Caller(
                accountID: credential.accountID, principalARN: credential.principalARN, accessKeyID: credential.accessKeyID,
                sourceIP: context.remoteAddress?.ipAddress, userAgent: request.headers[.userAgent])
            let output = try await operation.handle(body, caller)
            logger.debug("request succeeded")
            return Self.response(.ok, body: output, requestID: requestID)
        } catch let error as KMSError {
            logger.info("request failed", metadata: ["kms.error": "\(error.code)", "kms.error.message": "\(error.message)"])
            if let cause = error.cause { logger.error("cause of the failure", metadata: ["kms.error.cause": "\(cause)"]) }
            return Self.errorResponse(error, requestID: requestID)
        } catch {
            logger.error("unexpected failure", metadata: ["error": "\(error)"])
            return Self.errorResponse(KMSError(.internalFailure, "An internal error occurred; the request can be retried."), requestID: requestID)
        }
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
