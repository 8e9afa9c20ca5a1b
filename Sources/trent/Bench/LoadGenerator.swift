import Crypto
import Foundation
import KMS
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Signs AWS JSON 1.1 requests with Signature Version 4 as the AWS SDKs do (header form, service `kms`), once
/// per request. The signing key is derived once per day.
final class RequestSigner: Sendable {
    let accessKeyID: String
    let secret: String
    let region: String
    let host: String
    private let dayKey = Mutex<(day: String, key: SymmetricKey)?>(nil)

    init(accessKeyID: String, secret: String, region: String, host: String) {
        self.accessKeyID = accessKeyID
        self.secret = secret
        self.region = region
        self.host = host
    }

    private func signingKey(day: String) -> SymmetricKey {
        if let cached = dayKey.withLock({ $0 }), cached.day == day { return cached.key }
        var key = SymmetricKey(data: Array("AWS4\(secret)".utf8))
        for part in [day, region, "kms", "aws4_request"] {
            key = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key))
        }
        dayKey.withLock { $0 = (day, key) }
        return key
    }

    /// The head of a signed `POST /` for `TrentService.<operation>` with `body`.
    func sign(operation: String, body: [UInt8], now: Date = Date()) -> HTTPRequestHead {
        let amzDate = Self.amzDate(now)
        let day = String(amzDate.prefix(8))
        let target = "TrentService.\(operation)"
        let contentType = "application/x-amz-json-1.1"
        let payloadHash = SHA256.hash(data: body).hexString
        let signedHeaders = "content-type;host;x-amz-date;x-amz-target"
        let canonical = "POST\n/\n\ncontent-type:\(contentType)\nhost:\(host)\nx-amz-date:\(amzDate)\nx-amz-target:\(target)\n\n\(signedHeaders)\n\(payloadHash)"
        let scope = "\(day)/\(region)/kms/aws4_request"
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(SHA256.hash(data: Array(canonical.utf8)).hexString)"
        let signature = HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: signingKey(day: day)).hexString
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Content-Type", value: contentType)
        head.headers.add(name: "X-Amz-Date", value: amzDate)
        head.headers.add(name: "X-Amz-Target", value: target)
        head.headers.add(name: "Content-Length", value: String(body.count))
        head.headers.add(
            name: "Authorization",
            value: "AWS4-HMAC-SHA256 Credential=\(accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)")
        return head
    }

    static func amzDate(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
    }
}

/// One request the load generator sends: which operation it counts under, the signed head and the body.
struct PreparedRequest {
    var label: Int
    var head: HTTPRequestHead
    var body: [UInt8]
}

/// Latencies (nanoseconds) and errors of one operation during one load run.
struct OperationSamples {
    var latencies: [UInt64] = []
    var errors = 0
    var firstError: String?
}

/// A closed-loop HTTP/1.1 load generator on SwiftNIO: `connections` keep-alive connections, each sending its
/// next request as soon as the previous answer is complete, for a fixed time after a warm-up. Runs on its own
/// event loop; the server under test runs in another process on the same machine.
final class LoadGenerator: @unchecked Sendable {
    struct Result {
        var seconds: Double
        var samples: [OperationSamples]
        var connectErrors: Int
    }

    let host: String
    let port: Int
    let group: any EventLoopGroup

    init(host: String, port: Int, group: any EventLoopGroup) {
        self.host = host
        self.port = port
        self.group = group
    }

    /// Sends requests from `next` (called on the event loop, once per request) over `connections` connections
    /// for `warmup` + `duration` seconds; only answers completed after the warm-up count.
    /// `isSuccess` judges an answer (status and body); by default any 200 is a success.
    func run(
        labels: Int, connections: Int, duration: Double, warmup: Double, stopWhen: (@Sendable () -> Bool)? = nil,
        next: @escaping @Sendable () -> PreparedRequest,
        isSuccess: @escaping @Sendable (Int, PreparedRequest, ByteBuffer) -> Bool = { status, _, _ in status == 200 }
    ) async throws -> Result {
        let loop = group.next()
        let state = RunState(labels: labels, loop: loop)
        state.stopWhen = stopWhen
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        let connector = bootstrap.channelInitializer { channel in
            channel.pipeline.addHTTPClientHandlers().flatMap {
                channel.pipeline.addHandler(ClosedLoopHandler(state: state, next: next, isSuccess: isSuccess))
            }
        }
        let (host, port) = (self.host, self.port)
        // A server that closes the connection after an answer (moto's HTTP/1.0-style `Connection: close`) gets a
        // new connection, as its clients would open; the time to connect counts in that request's latency.
        state.reconnect = {
            connector.connect(host: host, port: port).whenComplete { result in
                switch result {
                case .success(let channel):
                    state.channels.append(channel)
                    channel.pipeline.fireUserInboundEventTriggered(ClosedLoopHandler.Start())
                case .failure:
                    state.connectionFailures += 1
                    state.connectionDone()
                }
            }
        }
        var channels: [any Channel] = []
        for _ in 0..<connections {
            channels.append(try await connector.connect(host: host, port: port).get())
        }
        let start = NIODeadline.now()
        try await loop.submit {
            state.recordingFrom = start + .nanoseconds(Int64(warmup * 1e9))
            state.stopAt = start + .nanoseconds(Int64((warmup + duration) * 1e9))
        }.get()
        for channel in channels { channel.pipeline.fireUserInboundEventTriggered(ClosedLoopHandler.Start()) }
        // A connection that neither answers nor closes must not hang the run.
        loop.scheduleTask(deadline: start + .nanoseconds(Int64((warmup + duration + 15) * 1e9))) { state.giveUp() }
        try await state.finished(count: connections).get()
        let result = try await loop.submit {
            let measuredEnd = state.lastCompletion ?? state.stopAt
            let seconds = Double((measuredEnd - state.recordingFrom).nanoseconds) / 1e9
            return Result(seconds: max(seconds, 1e-9), samples: state.samples, connectErrors: state.connectionFailures)
        }.get()
        let extra = try await loop.submit { state.channels }.get()
        for channel in channels + extra { try? await channel.close().get() }
        return result
    }

    /// State shared by the connections of one run; touched only on its event loop.
    final class RunState: @unchecked Sendable {
        let loop: any EventLoop
        var samples: [OperationSamples]
        var recordingFrom = NIODeadline.distantFuture
        var stopAt = NIODeadline.distantFuture
        var lastCompletion: NIODeadline?
        var stopWhen: (@Sendable () -> Bool)?
        var reconnect: (() -> Void)?
        var channels: [any Channel] = []
        private var completed = false
        var connectionFailures = 0
        private var done = 0
        private var expected = Int.max
        private let promise: EventLoopPromise<Void>

        init(labels: Int, loop: any EventLoop) {
            self.loop = loop
            self.samples = Array(repeating: OperationSamples(), count: labels)
            self.promise = loop.makePromise()
        }

        func connectionDone() {
            done += 1
            if done >= expected { complete() }
        }

        func giveUp() { complete() }

        private func complete() {
            guard !completed else { return }
            completed = true
            promise.succeed()
        }

        func finished(count: Int) -> EventLoopFuture<Void> {
            loop.submit {
                self.expected = count
                if self.done >= count { self.complete() }
            }.flatMap { self.promise.futureResult }
        }
    }

    final class ClosedLoopHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        typealias OutboundOut = HTTPClientRequestPart
        struct Start: Sendable {}

        let state: RunState
        let next: @Sendable () -> PreparedRequest
        let isSuccess: @Sendable (Int, PreparedRequest, ByteBuffer) -> Bool
        var current: PreparedRequest?
        var sentAt = NIODeadline.now()
        var status = 0
        var body = ByteBuffer()
        var finished = false
        var serverCloses = false

        init(state: RunState, next: @escaping @Sendable () -> PreparedRequest, isSuccess: @escaping @Sendable (Int, PreparedRequest, ByteBuffer) -> Bool) {
            self.state = state
            self.next = next
            self.isSuccess = isSuccess
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is Start { send(context: context) } else { context.fireUserInboundEventTriggered(event) }
        }

        private func send(context: ChannelHandlerContext) {
            let request = next()
            current = request
            body.clear()
            sentAt = .now()
            context.write(wrapOutboundOut(.head(request.head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: request.body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                status = Int(head.status.code)
                serverCloses = !head.isKeepAlive
            case .body(var part):
                body.writeBuffer(&part)
            case .end:
                let now = NIODeadline.now()
                guard let request = current else { return }
                current = nil
                if sentAt >= state.recordingFrom && now <= state.stopAt {
                    let ok = isSuccess(status, request, body)
                    if ok {
                        state.samples[request.label].latencies.append(UInt64((now - sentAt).nanoseconds))
                    } else {
                        state.samples[request.label].errors += 1
                        if state.samples[request.label].firstError == nil {
                            state.samples[request.label].firstError = "HTTP \(status): \(String(buffer: body).prefix(300))"
                        }
                    }
                    state.lastCompletion = now
                }
                let more = now < state.stopAt && !(state.stopWhen?() ?? false)
                if more && serverCloses {
                    // This connection ends here; a new one carries the loop on (see `reconnect`).
                    finished = true
                    context.close(promise: nil)
                    state.reconnect?()
                } else if more {
                    send(context: context)
                } else {
                    finish()
                }
            }
        }

        private func finish() {
            guard !finished else { return }
            finished = true
            state.connectionDone()
        }

        func channelInactive(context: ChannelHandlerContext) {
            if current != nil, let request = current {
                state.samples[request.label].errors += 1
                if state.samples[request.label].firstError == nil { state.samples[request.label].firstError = "connection closed" }
                state.connectionFailures += 1
            }
            finish()
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if let request = current, state.samples[request.label].firstError == nil {
                state.samples[request.label].firstError = "\(error)"
            }
            context.close(promise: nil)
        }
    }
}

/// Percentiles over recorded latencies.
struct LatencySummary: Codable {
    var count: Int
    var p50Ms: Double
    var p90Ms: Double
    var p99Ms: Double
    var p999Ms: Double
    var maxMs: Double

    init(_ nanoseconds: [UInt64]) {
        let sorted = nanoseconds.sorted()
        count = sorted.count
        func at(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            let index = min(sorted.count - 1, Int((Double(sorted.count) * q).rounded(.up)) - 1)
            return Double(sorted[max(0, index)]) / 1e6
        }
        p50Ms = at(0.50)
        p90Ms = at(0.90)
        p99Ms = at(0.99)
        p999Ms = at(0.999)
        maxMs = Double(sorted.last ?? 0) / 1e6
    }
}
