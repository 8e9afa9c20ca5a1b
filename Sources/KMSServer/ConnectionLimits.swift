public import HummingbirdCore
public import Logging
public import NIOCore
import NIOHTTPTypes
import Synchronization

/// What one client may hold before its request reaches KMS: header size and count, time to send a request,
/// time a connection may sit idle, and the number of connections open at once. Without them a client holds
/// memory or a connection for as long as it likes.
public struct ConnectionLimits: Sendable {
    /// The request target and the header names and values of one request together (and so each one alone).
    public var maxHeaderBytes: Int
    /// Header fields of one request, trailers included.
    public var maxHeaderFields: Int
    /// From a request's first byte to its last: a client that trickles bytes cannot keep a connection forever.
    public var readTimeout: Duration
    /// How long a connection with no request under way stays open.
    public var idleTimeout: Duration
    /// Connections open at once; more are closed as soon as they are accepted.
    public var maxConnections: Int

    public init(maxHeaderBytes: Int, maxHeaderFields: Int, readTimeout: Duration, idleTimeout: Duration, maxConnections: Int) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderFields = maxHeaderFields
        self.readTimeout = readTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 within `limits`. Header limits are NIO's decoder's (Hummingbird answers 400 and closes); the idle
    /// timeout is Hummingbird's; the read deadline and the connection count are Trent's, below.
    public static func http1(limits: ConnectionLimits, logger: Logger) -> HTTPServerBuilder {
        let connections = ConnectionCounter(maximum: limits.maxConnections, logger: logger)
        let readTimeout = TimeAmount(limits.readTimeout)
        let configuration = HTTP1Channel.Configuration(
            additionalChannelHandlers: [RequestReadDeadline(timeout: readTimeout)],
            idleTimeout: TimeAmount(limits.idleTimeout),
            httpDecoderConfiguration: .init(
                maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes,
                maxHeaderFieldCount: limits.maxHeaderFields))
        return HTTPServerBuilder { responder in
            LimitedHTTP1Channel(http1: HTTP1Channel(responder: responder, configuration: configuration), connections: connections)
        }
    }
}

/// Hummingbird's HTTP/1 channel, behind what needs the raw connection: the connection count, and the watcher in
/// front of the HTTP decoder that tells the read deadline when a request's first bytes arrive.
struct LimitedHTTP1Channel: ServerChildChannel {
    let http1: HTTP1Channel
    let connections: ConnectionCounter

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1Channel.Value> {
        guard connections.admit(channel) else {
            // A failed setup drops the channel; closing it is ours to do.
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(RequestBytesWatcher(), position: .first)
        }.flatMap {
            http1.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: HTTP1Channel.Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}

/// Counts open connections across event loops and refuses those above the maximum. Closing at once (rather than
/// leaving them unaccepted in the listen backlog, as Hummingbird's `availableConnectionsDelegate` does) tells a
/// client right away to go elsewhere or retry, instead of letting it wait on a connection nobody reads.
final class ConnectionCounter: Sendable {
    let maximum: Int
    let logger: Logger
    private let open = Atomic<Int>(0)
    /// Whether the last connection was refused, so that a flood of refusals logs one line, not one each.
    private let refusing = Atomic<Bool>(false)

    init(maximum: Int, logger: Logger) {
        self.maximum = maximum
        self.logger = logger
    }

    /// Counts `channel` until it closes; false (and not counted) when `maximum` connections are already open.
    func admit(_ channel: any Channel) -> Bool {
        guard open.add(1, ordering: .relaxed).newValue <= maximum else {
            open.subtract(1, ordering: .relaxed)
            if !refusing.exchange(true, ordering: .relaxed) {
                logger.warning(
                    "connection limit reached; refusing new connections until some close", metadata: ["maxConnections": "\(maximum)"])
            }
            return false
        }
        refusing.store(false, ordering: .relaxed)
        channel.closeFuture.whenComplete { _ in self.open.subtract(1, ordering: .relaxed) }
        return true
    }
}

/// In front of the HTTP decoder: announces each read to the ``RequestReadDeadline`` behind it, which starts its clock
/// when bytes arrive while no request is being read, that is at a request's first byte.
final class RequestBytesWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    struct BytesArrived {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireUserInboundEventTriggered(BytesArrived())
        context.fireChannelRead(data)
    }
}

/// Closes the connection when a request has not fully arrived `timeout` after its first byte. Hummingbird's idle
/// timeout does not bound this: each body part counts as activity, so a client sending a byte a second would hold
/// the connection forever. The expiry is also thrown into the request's body, so a half-read request is refused as
/// unreadable instead of being handled as if it had ended there.
final class RequestReadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    struct Expired: Error {}

    let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is RequestBytesWatcher.BytesArrived else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard deadline == nil else { return }
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.deadline = nil
            context.fireErrorCaught(Expired())
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) {
            cancel()
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancel()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancel()
    }

    private func cancel() {
        deadline?.cancel()
        deadline = nil
    }
}
