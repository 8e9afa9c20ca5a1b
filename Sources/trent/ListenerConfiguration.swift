import Foundation
import HummingbirdCore
import KMSServer
import Logging

/// The API listener's TLS settings and the shutdown bound: their checks and what `serve` derives from them.
extension TrentConfiguration {
    var servesTLS: Bool { !server.tls.certificateFile.isEmpty }

    /// `https://host:port` or `http://host:port`, as the banner and AWS_ENDPOINT_URL_KMS give it.
    var endpoint: String {
        let host = server.host.contains(":") ? "[\(server.host)]" : server.host
        return "\(servesTLS ? "https" : "http")://\(host):\(server.port)"
    }

    /// Plain HTTP off the loopback interface would carry plaintexts, data keys and HSM PINs in clear: it needs TLS,
    /// or `server.allowPlaintext: true` saying in words that a proxy in front terminates TLS.
    func validateListener() throws {
        let tls = server.tls
        guard tls.certificateFile.isEmpty == tls.privateKeyFile.isEmpty else {
            throw StartupError("server.tls.certificateFile and server.tls.privateKeyFile must be set together")
        }
        guard tls.clientCAFile.isEmpty || servesTLS else {
            throw StartupError("server.tls.clientCAFile needs server.tls.certificateFile and server.tls.privateKeyFile (mutual TLS is TLS)")
        }
        guard servesTLS || server.allowPlaintext || Self.isLoopback(server.host) else {
            throw StartupError(
                "server.host \(server.host) is not a loopback address and TLS is off: set server.tls.certificateFile and "
                    + "server.tls.privateKeyFile, or server.allowPlaintext: true (TRENT_ALLOW_PLAINTEXT) if a proxy terminates TLS in front of Trent")
        }
        guard (0...3600).contains(server.shutdownGraceSeconds) else {
            throw StartupError("server.shutdownGraceSeconds must be 0 to 3600, not \(server.shutdownGraceSeconds)")
        }
    }

    /// 127.0.0.0/8, ::1 and `localhost`: addresses no other host can reach.
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { bytes in bytes.dropLast().allSatisfy { $0 == 0 } && bytes.last == 1 }
        }
        return false
    }
}

/// What HTTPS needs, read from its files at startup.
struct ListenerTLS {
    let certificate: ServerCertificate
    let clientCertificateAuthorities: ClientCertificateAuthorities?
}

extension TrentConfiguration {
    /// The certificate the API listener serves and the CAs of mutual TLS, read (and checked) now; nil when TLS is off.
    func listenerTLS() throws -> ListenerTLS? {
        guard servesTLS else { return nil }
        do {
            return ListenerTLS(
                certificate: try ServerCertificate(certificateFile: server.tls.certificateFile, privateKeyFile: server.tls.privateKeyFile),
                clientCertificateAuthorities: server.tls.clientCAFile.isEmpty ? nil : try ClientCertificateAuthorities(file: server.tls.clientCAFile))
        } catch let error as TLSFileError {
            throw StartupError(error.description)
        }
    }

    /// HTTPS (mutual TLS with client CAs), else plain HTTP/1.1; both within the connection limits.
    func listener(tls: ListenerTLS?, logger: Logger) throws -> HTTPServerBuilder {
        guard let tls else { return .http1(limits: connectionLimits, logger: logger) }
        return try .https(
            limits: connectionLimits, certificate: tls.certificate, clientCertificateAuthorities: tls.clientCertificateAuthorities, logger: logger)
    }
}
