import Foundation
import KMS
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
        #expect(configuration.service.regions == TrentConfiguration.Service.commercialRegions)
        try configuration.applyEnvironment(["TRENT_REGIONS": "us-east-1, eu-west-1,,"])
        #expect(configuration.service.regions == ["us-east-1", "eu-west-1"])
    }

    @Test func aRegionNameMustLookLikeOne() {
        var configuration = TrentConfiguration()
        let error = #expect(throws: StartupError.self) { try configuration.applyEnvironment(["TRENT_REGIONS": "us-east-1,Mars 1"]) }
        #expect(error?.description.contains("not 'Mars 1'") == true)
    }

    @Test func badValuesStopStartupWithOneLine() {
        var configuration = TrentConfiguration()
        #expect(throws: StartupError.self) { try configuration.applyEnvironment(["TRENT_PORT": "http"]) }
        #expect(throws: StartupError.self) { try configuration.applyEnvironment(["TRENT_PORT": "70000"]) }
        #expect(throws: StartupError.self) { try configuration.applyEnvironment(["TRENT_NONCE_BUDGET": "8589934592"]) }
        for name in [
            "TRENT_MAX_HEADER_BYTES", "TRENT_MAX_HEADER_FIELDS", "TRENT_MAX_BODY_BYTES", "TRENT_READ_TIMEOUT_SECONDS",
            "TRENT_IDLE_TIMEOUT_SECONDS", "TRENT_MAX_CONNECTIONS",
        ] {
            var fresh = TrentConfiguration()
            #expect(throws: StartupError.self, "\(name)=0") { try fresh.applyEnvironment([name: "0"]) }
        }
    }

    @Test func quotasAndLogSettingsComeFromTheFileAndTheEnvironment() throws {
        var configuration = try TrentConfiguration.parse(
            """
            log:
              format: json
            quotas:
              rates:
                CreateKey: 50
              accounts:
                - account: "444455556666"
                  rates: {symmetric: 20, GenerateDataKeyPair_RSA_2048: 0.5}
            """, source: "test")
        #expect(configuration.log == .init(level: "info", format: "json"))
        #expect(configuration.quotas.enabled)
        #expect(configuration.quotas.rates["CreateKey"] == 50)
        #expect(configuration.quotas.rates["symmetric"] == 10_000)
        #expect(configuration.quotas.accounts == [.init(account: "444455556666", rates: ["symmetric": 20, "GenerateDataKeyPair_RSA_2048": 0.5])])
        let quotas = try #require(configuration.requestQuotas)
        #expect(quotas.rate(account: "444455556666", quota: "symmetric") == 20)
        #expect(quotas.rate(account: "111122223333", quota: "symmetric") == 10_000)
        try configuration.applyEnvironment(["TRENT_QUOTAS_ENABLED": "false", "TRENT_LOG_LEVEL": "debug", "TRENT_LOG_FORMAT": "text"])
        #expect(configuration.requestQuotas == nil)
        #expect(configuration.log == .init(level: "debug", format: "text"))
    }

    /// Quotas are on by default, at AWS's published rates; logs are text at info, as before.
    @Test func quotasAreOnByDefaultAtAWSRates() throws {
        let defaults = TrentConfiguration()
        #expect(defaults.quotas.enabled && defaults.quotas.rates == RequestQuotas.awsDefaultRates && defaults.quotas.accounts.isEmpty)
        let quotas = try #require(defaults.requestQuotas)
        #expect(quotas.rate(account: "111122223333", quota: "CreateKey") == 5)
        #expect(quotas.rate(account: "111122223333", quota: "symmetric") == 10_000)
        #expect(defaults.log == .init(level: "info", format: "text"))
    }

    @Test func badQuotaAndLogSettingsStopStartupWithOneLine() {
        for yaml in [
            "quotas:\n  rates:\n    CreatKey: 5\n",
            "quotas:\n  rates:\n    CreateKey: -1\n",
            "quotas:\n  accounts:\n    - account: \"12\"\n      rates: {}\n",
            "quotas:\n  accounts:\n    - account: \"444455556666\"\n      rates: {symetric: 1}\n",
            "log:\n  format: xml\n",
            "log:\n  level: loud\n",
            "logLevel: info\n",
        ] {
            #expect(throws: StartupError.self, "\(yaml)") { try TrentConfiguration.parse(yaml, source: "test") }
        }
        var configuration = TrentConfiguration()
        #expect(throws: StartupError.self) { try configuration.applyEnvironment(["TRENT_QUOTAS_ENABLED": "maybe"]) }
    }

    /// The admin listener: loopback:4600 by default, TRENT_ADMIN_* over the file, 0 turns it off, and never the API's port.
    @Test func theAdminListenerIsConfigured() throws {
        var configuration = try TrentConfiguration.parse("admin:\n  port: 9100\n", source: "test")
        #expect(configuration.admin == .init(host: "127.0.0.1", port: 9100))
        try configuration.applyEnvironment(["TRENT_ADMIN_HOST": "0.0.0.0", "TRENT_ADMIN_PORT": "0"])
        #expect(configuration.admin == .init(host: "0.0.0.0", port: 0))
        for value in ["-1", "65536", "4599", "metrics"] {
            var fresh = TrentConfiguration()
            #expect(throws: StartupError.self, "TRENT_ADMIN_PORT=\(value)") { try fresh.applyEnvironment(["TRENT_ADMIN_PORT": value]) }
        }
        #expect(HealthcheckCommand.connectableHost("0.0.0.0") == "127.0.0.1")
        #expect(HealthcheckCommand.connectableHost("::") == "::1")
        #expect(HealthcheckCommand.connectableHost("[::1]") == "::1")
        let answer = try HTTPProbe.parse(Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}".utf8))
        #expect(answer.status == 503 && answer.body == "{}")
        #expect(throws: HTTPProbe.Failure.self) { try HTTPProbe.parse(Array("SSH-2.0-OpenSSH\r\n".utf8)) }
    }

    /// Each connection limit has its TRENT_* variable (the end-to-end tests show each reaches the listener).
    @Test func connectionLimitsComeFromTheFileAndTheEnvironment() throws {
        var configuration = try TrentConfiguration.parse("server:\n  maxConnections: 10\n  readTimeoutSeconds: 5\n", source: "test")
        #expect(configuration.server.maxConnections == 10)
        #expect(configuration.server.idleTimeoutSeconds == 60)
        try configuration.applyEnvironment([
            "TRENT_MAX_HEADER_BYTES": "8192", "TRENT_MAX_HEADER_FIELDS": "50", "TRENT_MAX_BODY_BYTES": "65536",
            "TRENT_READ_TIMEOUT_SECONDS": "2", "TRENT_IDLE_TIMEOUT_SECONDS": "3", "TRENT_MAX_CONNECTIONS": "8",
        ])
        var expected = TrentConfiguration.Server()
        (expected.maxHeaderBytes, expected.maxHeaderFields, expected.maxBodyBytes) = (8192, 50, 65536)
        (expected.readTimeoutSeconds, expected.idleTimeoutSeconds, expected.maxConnections) = (2, 3, 8)
        #expect(configuration.server == expected)
    }

    @Test func theListenerDefaultsAreAnOperatorsExpectation() {
        let server = TrentConfiguration().server
        #expect(server.maxHeaderBytes == 16 * 1024)
        #expect(server.maxHeaderFields == 100)
        #expect(server.maxBodyBytes == 1 << 20)
        #expect(server.readTimeoutSeconds == 30)
        #expect(server.idleTimeoutSeconds == 60)
        #expect(server.maxConnections == 4096)
    }
}

@Suite struct ConfigurationFileErrorTests {
    @Test(arguments: [
        "server:\n  prot: 1\n", "hsm: 3\n", "server:\n  port: many\n", "- a\n- b\n", "server:\n  idleTimeoutSeconds: 0\n",
        "server:\n  maxConnections: -5\n", "server:\n  readTimeoutSeconds: 1.5\n",
    ])
    func mistakesInTheFileAreRefused(text: String) {
        #expect(throws: StartupError.self) { _ = try TrentConfiguration.parse(text, source: "test.yaml") }
    }
}
