import Foundation
import Testing
@testable import trent

/// The API listener's TLS settings, the plaintext rule and the shutdown bound (the e2e suite's test_tls.py and
/// test_shutdown.py show each one reaching the server).
@Suite struct ListenerConfigurationTests {
    @Test(arguments: ["127.0.0.1", "127.255.0.9", "::1", "0:0:0:0:0:0:0:1", "localhost"])
    func loopbackAddresses(host: String) {
        #expect(TrentConfiguration.isLoopback(host))
    }

    @Test(arguments: ["0.0.0.0", "10.0.0.1", "128.0.0.1", "::", "::2", "example.com", "127.0.0.1.example.com", ""])
    func otherAddresses(host: String) {
        #expect(!TrentConfiguration.isLoopback(host))
    }

    @Test func plainHTTPOffLoopbackNeedsTheOperatorsWord() throws {
        var refused = TrentConfiguration()
        #expect(throws: StartupError.self) { try refused.applyEnvironment(["TRENT_HOST": "0.0.0.0"]) }
        var allowed = TrentConfiguration()
        try allowed.applyEnvironment(["TRENT_HOST": "0.0.0.0", "TRENT_ALLOW_PLAINTEXT": "true"])
        #expect(allowed.server.allowPlaintext && allowed.endpoint == "http://0.0.0.0:4599")
        var tls = TrentConfiguration()
        try tls.applyEnvironment([
            "TRENT_HOST": "0.0.0.0", "TRENT_TLS_CERTIFICATE_FILE": "/etc/trent/cert.pem", "TRENT_TLS_PRIVATE_KEY_FILE": "/etc/trent/key.pem",
            "TRENT_TLS_CLIENT_CA_FILE": "/etc/trent/clients.pem", "TRENT_SHUTDOWN_GRACE_SECONDS": "7",
        ])
        #expect(tls.server.tls == .init(certificateFile: "/etc/trent/cert.pem", privateKeyFile: "/etc/trent/key.pem", clientCAFile: "/etc/trent/clients.pem"))
        #expect(tls.endpoint == "https://0.0.0.0:4599" && tls.server.shutdownGraceSeconds == 7)
    }

    @Test func theFileSetsTLSAndTheEnvironmentWins() throws {
        var configuration = try TrentConfiguration.parse(
            "server:\n  host: \"::1\"\n  shutdownGraceSeconds: 3\n  tls:\n    certificateFile: a.pem\n    privateKeyFile: a.key\n", source: "test")
        #expect(configuration.endpoint == "https://[::1]:4599")
        try configuration.applyEnvironment(["TRENT_TLS_CERTIFICATE_FILE": "b.pem"])
        #expect(configuration.server.tls.certificateFile == "b.pem" && configuration.server.tls.privateKeyFile == "a.key")
        #expect(configuration.server.shutdownGraceSeconds == 3)
    }

    @Test(arguments: [
        ["TRENT_ALLOW_PLAINTEXT": "maybe"], ["TRENT_ALLOW_PLAINTEXT": "1"], ["TRENT_TLS_CERTIFICATE_FILE": "a.pem"], ["TRENT_TLS_PRIVATE_KEY_FILE": "a.key"],
        ["TRENT_TLS_CLIENT_CA_FILE": "ca.pem"], ["TRENT_SHUTDOWN_GRACE_SECONDS": "-1"], ["TRENT_SHUTDOWN_GRACE_SECONDS": "3601"],
    ])
    func inconsistentSettingsAreRefused(environment: [String: String]) {
        var configuration = TrentConfiguration()
        #expect(throws: StartupError.self) { try configuration.applyEnvironment(environment) }
    }

    @Test func theDefaultsServePlainHTTPOnLoopbackWithATwentySecondGrace() {
        let configuration = TrentConfiguration()
        #expect(configuration.endpoint == "http://127.0.0.1:4599")
        #expect(!configuration.servesTLS && !configuration.server.allowPlaintext && configuration.server.shutdownGraceSeconds == 20)
    }
}
