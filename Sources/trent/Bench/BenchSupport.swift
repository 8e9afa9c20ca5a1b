import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// One request and its answer, for setup steps (creating keys, a first ciphertext).
enum OneShot {
    struct Answer {
        var status: Int
        var body: [UInt8]
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
        var errorType: String? { json["__type"] as? String }
    }

    static func send(
        _ operation: String, _ body: [String: Any], signer: RequestSigner, host: String, port: Int, group: any EventLoopGroup
    ) async throws -> Answer {
        let bytes = Array(try JSONSerialization.data(withJSONObject: body))
        let head = signer.sign(operation: operation, body: bytes)
        let promise = group.next().makePromise(of: Answer.self)
        let channel = try await ClientBootstrap(group: group).channelInitializer { channel in
            channel.pipeline.addHTTPClientHandlers().flatMap { channel.pipeline.addHandler(Collector(promise: promise)) }
        }.connect(host: host, port: port).get()
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: bytes))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let answer = try await promise.futureResult.get()
        try? await channel.close().get()
        return answer
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<Answer>
        var status = 0
        var body: [UInt8] = []
        init(promise: EventLoopPromise<Answer>) { self.promise = promise }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): status = Int(head.status.code)
            case .body(let buffer): body += Array(buffer.readableBytesView)
            case .end: promise.succeed(Answer(status: status, body: body))
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { promise.fail(error) }
        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(ChannelError.inputClosed)
            context.fireChannelInactive()
        }
    }
}

/// A child process (a Trent server, the HTTP ceiling server, moto) with its output in a log file.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    let name: String
    let logURL: URL

    init(name: String, executable: String, arguments: [String], environment: [String: String], logURL: URL, directory: URL? = nil) {
        self.name = name
        self.logURL = logURL
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        if let directory { process.currentDirectoryURL = directory }
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let handle = try? FileHandle(forWritingTo: logURL)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
    }

    var pid: Int32 { process.processIdentifier }

    /// Children still running, stopped when the benchmark is interrupted (SIGINT, SIGTERM).
    static let running = Mutex<Set<Int32>>([])
    /// Kept alive for the life of the process; set once, from the command's start.
    nonisolated(unsafe) private static var signalSources: [any DispatchSourceSignal] = []

    /// On SIGINT or SIGTERM, stop every child before exiting, so no server outlives an interrupted run.
    static func stopChildrenOnSignals() {
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                for pid in running.withLock({ $0 }) { kill(pid, SIGTERM) }
                exit(130)
            }
            source.resume()
            signalSources.append(source)
        }
    }

    /// Starts the process and waits until `port` accepts connections; returns the seconds that took.
    func start(waitingFor host: String, port: Int, timeout: Double = 120) throws -> Double {
        let started = Date()
        try process.run()
        let pid = process.processIdentifier
        Self.running.withLock { _ = $0.insert(pid) }
        while Date().timeIntervalSince(started) < timeout {
            if !process.isRunning {
                let log = (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
                throw BenchError("\(name) exited with status \(process.terminationStatus) before listening:\n\(log.suffix(2000))")
            }
            if Self.portOpen(host: host, port: port) { return Date().timeIntervalSince(started) }
            usleep(2_000)
        }
        stop()
        throw BenchError("\(name) did not listen on \(host):\(port) within \(Int(timeout)) s (log: \(logURL.path))")
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    func stop(grace: Double = 20) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let pid = process.processIdentifier
        Self.running.withLock { _ = $0.remove(pid) }
    }

    /// Resident memory in MiB (Linux /proc).
    var residentMiB: Double? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kib = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
            return kib / 1024
        }
        return nil
    }

    /// CPU seconds (user + system) the process has used so far.
    var cpuSeconds: Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func portOpen(host: String, port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return result == 0
    }

    static func freePort() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The HTTP ceiling: the same Hummingbird 2 application setup as `trent serve` (same server configuration, one
/// `POST /` route), whose handler only reads the body and answers a fixed JSON document with the same headers.
/// Whatever Trent costs beyond this is Trent's own work.
enum BenchCeilingServer {
    static func run(host: String, port: Int) async throws {
        let router = Router()
        let fixed = ByteBuffer(string: #"{"CiphertextBlob":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=","KeyId":"arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}"#)
        router.post("/") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            return Response(
                status: .ok,
                headers: [.contentType: "application/x-amz-json-1.1", HTTPField.Name("x-amzn-RequestId")!: "00000000-0000-0000-0000-000000000000"],
                body: ResponseBody(byteBuffer: fixed))
        }
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "Trent"))
        try await app.runService()
    }
}
