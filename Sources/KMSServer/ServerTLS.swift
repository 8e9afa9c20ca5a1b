import Foundation
public import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL
import Synchronization

/// A failure to load TLS files, as one line that names the file and what to fix.
public struct TLSFileError: Error, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// The API listener's certificate chain and private key, read from PEM files and replaceable while Trent serves:
/// every TLS handshake takes the pair held here at its start, so after ``reload()`` new connections present the
/// new chain while open ones keep the session they made.
public final class ServerCertificate: Sendable {
    public let certificateFile: String
    public let privateKeyFile: String
    private let current: Mutex<Pair>

    struct Pair: Sendable {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
    }

    /// Reads both files; throws a ``TLSFileError`` when either is missing, unreadable, not PEM, or the key is not
    /// the leaf certificate's.
    public init(certificateFile: String, privateKeyFile: String) throws {
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
        self.current = Mutex(try Self.load(certificateFile: certificateFile, privateKeyFile: privateKeyFile))
    }

    /// Reads the files again and, only when they make a usable pair, puts them in place for the next handshakes.
    /// On failure the pair in use stays, and the error says why.
    public func reload() throws {
        let pair = try Self.load(certificateFile: certificateFile, privateKeyFile: privateKeyFile)
        current.withLock { $0 = pair }
    }

    /// The leaf certificate's serial number in hex, for the log line that says which certificate is served.
    public var serialNumber: String {
        current.withLock { $0.chain.first?.serialNumber.map { String(format: "%02x", $0) }.joined() ?? "" }
    }

    var pair: Pair { current.withLock { $0 } }

    private static func load(certificateFile: String, privateKeyFile: String) throws -> Pair {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(read(certificateFile, setting: "server.tls.certificateFile"))
        } catch let error as TLSFileError {
            throw error
        } catch {
            throw TLSFileError("server.tls.certificateFile \(certificateFile) is not a PEM certificate chain")
        }
        guard !chain.isEmpty else { throw TLSFileError("server.tls.certificateFile \(certificateFile) holds no PEM certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: read(privateKeyFile, setting: "server.tls.privateKeyFile"), format: .pem)
        } catch let error as TLSFileError {
            throw error
        } catch {
            throw TLSFileError("server.tls.privateKeyFile \(privateKeyFile) is not an unencrypted PEM private key")
        }
        // BoringSSL refuses a key that does not match the leaf certificate when both go into one context.
        do {
            _ = try NIOSSLContext(
                configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw TLSFileError(
                "server.tls.privateKeyFile \(privateKeyFile) is not the private key of the first certificate in \(certificateFile)")
        }
        return Pair(chain: chain, key: key)
    }

    private static func read(_ path: String, setting: String) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else { throw TLSFileError("\(setting) \(path) does not exist") }
        guard let data = FileManager.default.contents(atPath: path) else { throw TLSFileError("\(setting) \(path) cannot be read") }
        return Array(data)
    }
}

/// The CA bundle that client certificates must chain to (mutual TLS).
public struct ClientCertificateAuthorities: Sendable {
    let certificates: [NIOSSLCertificate]

    public init(file: String) throws {
        guard FileManager.default.fileExists(atPath: file) else { throw TLSFileError("server.tls.clientCAFile \(file) does not exist") }
        guard let data = FileManager.default.contents(atPath: file) else { throw TLSFileError("server.tls.clientCAFile \(file) cannot be read") }
        let certificates = try? NIOSSLCertificate.fromPEMBytes(Array(data))
        guard let certificates, !certificates.isEmpty else {
            throw TLSFileError("server.tls.clientCAFile \(file) holds no PEM certificate")
        }
        self.certificates = certificates
    }
}

extension HTTPServerBuilder {
    /// HTTPS: Hummingbird's TLS channel in front of ``http1(limits:logger:)``, so the connection count, the read
    /// deadline (which then also bounds the TLS handshake) and the header limits hold as over plain HTTP.
    ///
    /// TLS 1.2 is the minimum (1.0 and 1.1 are deprecated by RFC 8996); the cipher suites are swift-nio-ssl's
    /// defaults (ECDHE with AES-GCM or ChaCha20-Poly1305 only: forward secrecy and AEAD); BoringSSL has no TLS
    /// compression and renegotiation stays off. With `clientCertificateAuthorities`, a client must present a
    /// certificate that chains to one of them, or the handshake fails.
    public static func https(
        limits: ConnectionLimits, certificate: ServerCertificate, clientCertificateAuthorities: ClientCertificateAuthorities?,
        logger: Logger
    ) throws -> HTTPServerBuilder {
        let pair = certificate.pair
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: pair.chain.map { .certificate($0) }, privateKey: .privateKey(pair.key))
        tls.minimumTLSVersion = .tlsv12
        // When Trent closes a connection (idle, read deadline, shutdown) it sends close_notify and waits this long for
        // the client's; most clients just drop the socket, and swift-nio-ssl's 5 s would hold each closed connection
        // (its slot among maxConnections, and a graceful shutdown) that long.
        tls.shutdownTimeout = .seconds(1)
        if let authorities = clientCertificateAuthorities {
            tls.certificateVerification = .noHostnameVerification
            tls.trustRoots = .certificates(authorities.certificates)
            tls.sendCANameList = true
        }
        // Called at each client hello: the handshake uses the pair in place now, whatever the context was made with.
        tls.sslContextCallback = { _, promise in
            let pair = certificate.pair
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = pair.chain.map { .certificate($0) }
            override.privateKey = .privateKey(pair.key)
            promise.succeed(override)
        }
        return try .tls(.http1(limits: limits, logger: logger), tlsConfiguration: tls)
    }
}
