public import Hummingbird
public import KMSProtocol
import KMS
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

/// The KMS endpoint over Hummingbird: reads the body within its limit and hands the request to the
/// ``KMSRequestHandler``, which does everything KMS.
public struct KMSHTTPServer: Sendable {
    /// Far above any KMS request (a plaintext is at most 4 KiB, a key policy 32 KiB), and a bound on what one
    /// request can make the server hold.
    public static let defaultMaximumBodySize = 1 << 20
    static let requestIDHeader = HTTPField.Name("x-amzn-RequestId")!
    static let retryAfterHeader = HTTPField.Name("x-amz-retry-after")!

    let handler: KMSRequestHandler
    /// Bodies larger than this are answered 413 without being held.
    public let maximumBodySize: Int

    public init(handler: KMSRequestHandler, maximumBodySize: Int = Self.defaultMaximumBodySize) {
        self.handler = handler
        self.maximumBodySize = maximumBodySize
    }

    public func router() -> Router<KMSRequestContext> {
        let router = Router(context: KMSRequestContext.self)
        router.post("/") { request, context in
            await self.respond(to: request, context: context)
        }
        return router
    }

    func respond(to request: Request, context: KMSRequestContext) async -> Response {
        var headers: [String: [String]] = [:]
        for field in request.headers {
            headers[field.name.canonicalName, default: []].append(field.value)
        }
        var kmsRequest = KMSRequest(
            method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "", authority: request.head.authority,
            headers: headers, body: [], sourceIP: context.remoteAddress?.ipAddress)
        let answer: KMSResponse
        var headerFields: HTTPFields = [:]
        do {
            var buffer = try await request.body.collect(upTo: maximumBodySize)
            kmsRequest.body = buffer.readBytes(length: buffer.readableBytes) ?? []
            answer = await handler.handle(kmsRequest)
        } catch is NIOTooManyBytesError {
            answer = await handler.refuse(
                kmsRequest, with: KMSError(.validation, "The request body exceeds the limit of \(maximumBodySize) bytes."), status: 413)
        } catch {
            // The body could not be read: broken framing or a connection that ended early. That is the client's
            // error, never a retryable 500.
            answer = await handler.refuse(kmsRequest, with: KMSError(.serialization, "The request body could not be read."), status: 400)
            // Nothing after broken framing can be read as a request, so Hummingbird closes the connection: say so.
            headerFields[.connection] = "close"
        }
        headerFields[.contentType] = KMSResponse.contentType
        headerFields[Self.requestIDHeader] = answer.requestID
        if let milliseconds = answer.retryAfterMilliseconds { headerFields[Self.retryAfterHeader] = String(milliseconds) }
        return Response(
            status: HTTPResponse.Status(code: answer.status),
            headers: headerFields,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body)))
    }
}
