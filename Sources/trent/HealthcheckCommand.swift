import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `trent healthcheck [--live]`: asks the running server's admin listener `GET /ready` (or `/health`), as a container
/// HEALTHCHECK or a systemd watchdog would. Exits 0 on 200, else 1 with one line saying why. Reads the same
/// configuration as `trent serve` (`--config`, TRENT_CONFIG, TRENT_ADMIN_*), so it asks the right port.
struct HealthcheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "healthcheck",
        abstract: "Exit 0 when the server's admin listener answers GET /ready with 200 (with --live: GET /health), else 1 saying why.")

    @OptionGroup var options: ConfigOption

    @Flag(name: .long, help: "Check only that the process is alive (GET /health), not that it can serve (GET /ready).")
    var live = false

    @Option(name: .long, help: "Seconds to wait for the answer.")
    var timeout: Int = 5

    func run() throws {
        let path = live ? "/health" : "/ready"
        let configuration: TrentConfiguration
        do {
            configuration = try options.load()
        } catch let error as StartupError {
            Self.fail(error.description)
        }
        guard configuration.admin.port != 0 else { Self.fail("the admin listener is off (admin.port is 0): nothing to ask") }
        let host = Self.connectableHost(configuration.admin.host)
        let url = "http://\(host.contains(":") ? "[\(host)]" : host):\(configuration.admin.port)\(path)"
        do {
            let answer = try HTTPProbe.get(host: host, port: configuration.admin.port, path: path, timeoutSeconds: max(1, min(timeout, 300)))
            guard answer.status == 200 else {
                Self.fail("\(url) answered \(answer.status): \(answer.body.prefix(400))")
            }
            print("\(url) answered 200")
        } catch {
            Self.fail("\(url): \(error)")
        }
    }

    /// A listener on every address is asked on loopback.
    static func connectableHost(_ host: String) -> String {
        switch host {
        case "0.0.0.0", "": return "127.0.0.1"
        case "::", "[::]": return "::1"
        default: return host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("trent healthcheck: \(message)\n".utf8))
        Foundation.exit(1)
    }
}

/// One HTTP/1.1 GET over a plain socket, with a deadline on connecting, sending and receiving: all a probe needs,
/// without an HTTP client library. The answer is read up to 64 KiB.
enum HTTPProbe {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static let maximumAnswer = 64 * 1024

    static func get(host: String, port: Int, path: String, timeoutSeconds: Int) throws -> (status: Int, body: String) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var found: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &found)
        guard resolved == 0, let first = found else {
            throw Failure(description: "cannot resolve \(host): \(String(cString: gai_strerror(resolved)))")
        }
        defer { freeaddrinfo(first) }
        var lastError = "no address"
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        while let address = candidate {
            candidate = address.pointee.ai_next
            let descriptor = socket(address.pointee.ai_family, address.pointee.ai_socktype, address.pointee.ai_protocol)
            guard descriptor >= 0 else {
                lastError = String(cString: strerror(errno))
                continue
            }
            defer { close(descriptor) }
            var limit = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            // On Linux SO_SNDTIMEO bounds connect() too.
            setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            guard connect(descriptor, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 else {
                lastError = "cannot connect: \(String(cString: strerror(errno)))"
                continue
            }
            let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: trent-healthcheck\r\nConnection: close\r\n\r\n".utf8)
            let sent = request.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, 0) }
            guard sent == request.count else { throw Failure(description: "cannot send the request: \(String(cString: strerror(errno)))") }
            var answer: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while answer.count < maximumAnswer {
                let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
                if count == 0 { break }
                guard count > 0 else {
                    if answer.isEmpty { throw Failure(description: "no answer: \(String(cString: strerror(errno)))") }
                    break
                }
                answer += chunk.prefix(count)
            }
            return try parse(answer)
        }
        throw Failure(description: lastError)
    }

    /// The status code from `HTTP/1.x NNN ...`, and the body after the header block.
    static func parse(_ answer: [UInt8]) throws -> (status: Int, body: String) {
        let text = String(decoding: answer, as: UTF8.self)
        let statusLine = text.prefix { $0 != "\r" && $0 != "\n" }
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else {
            throw Failure(description: "not an HTTP answer: \(statusLine.prefix(80))")
        }
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
