import Foundation
import Testing
@testable import trent

/// `Config/trent.yaml` documents the built-in defaults: it must say exactly what the binary does.
@Suite struct ConfigurationTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func theShippedFileEqualsTheBuiltInDefaults() throws {
        let text = try String(contentsOf: Self.repository.appendingPathComponent("Config/trent.yaml"), encoding: .utf8)
        #expect(try TrentConfiguration.parse(text, source: "Config/trent.yaml") == TrentConfiguration())
    }

    @Test func environmentOverridesTheFile() throws {
        var configuration = try TrentConfiguration.parse("server:\n  port: 5000\n", source: "test")
        #expect(configuration.server.port == 5000)
        #expect(configuration.server.host == "127.0.0.1")
        try configuration.applyEnvironment(["TRENT_PORT": "6000", "TRENT_HSM_EMBEDDED_TOKEN": "none", "TRENT_REGION": "eu-west-1"])
        #expect(configuration.server.port == 6000)
        #expect(configuration.hsm.embeddedToken == "none")
        #expect(configuration.service.region == "eu-west-1")
    }

    @Test func badValuesStopStartupWithOneLine() {
        var configuration = TrentConfiguration()
        #expect(throws: StartupError.self) { try configuration.applyEnvironment(["TRENT_PORT": "http"]) }
        #expect(throws: StartupError.self) { try configuration.applyEnvironment(["TRENT_PORT": "70000"]) }
        #expect(throws: StartupError.self) { try configuration.applyEnvironment(["TRENT_NONCE_BUDGET": "8589934592"]) }
    }
}

@Suite struct ConfigurationFileErrorTests {
    @Test(arguments: ["server:\n  prot: 1\n", "hsm: 3\n", "server:\n  port: many\n", "- a\n- b\n"])
    func mistakesInTheFileAreRefused(text: String) {
        #expect(throws: StartupError.self) { _ = try TrentConfiguration.parse(text, source: "test.yaml") }
    }
}
