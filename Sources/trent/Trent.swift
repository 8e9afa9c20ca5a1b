import ArgumentParser
import Foundation
import Hummingbird
import KMS
import KMSHSM
import KMSServer
import KMSSQLite
import Logging
import NIOPosix
import PKCS11
import ServiceLifecycle
import UnixSignals

@main
struct Trent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trent",
        abstract: "A key management service that speaks the AWS KMS API and keeps its keys in a PKCS#11 token.",
        subcommands: [Serve.self, TokenCommand.self],
        defaultSubcommand: Serve.self)

    /// Runs `body`, printing a startup failure as one line on stderr and exiting 1, never a stack trace.
    static func runReportingFailures(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as StartupError {
            FileHandle.standardError.write(Data("trent: \(error.description)\n".utf8))
            throw ExitCode.failure
        } catch let error as HSMSetupError {
            FileHandle.standardError.write(Data("trent: \(error.description)\n".utf8))
            throw ExitCode.failure
        } catch let error as KMSError {
            FileHandle.standardError.write(Data("trent: \(error.message)\n".utf8))
            throw ExitCode.failure
        } catch let error as PKCS11Error {
            FileHandle.standardError.write(Data("trent: PKCS#11 failure: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "The configuration file (default: $TRENT_CONFIG, else built-in defaults).")
    var config: String?

    func load() throws -> TrentConfiguration { try TrentConfiguration.load(path: config) }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the AWS KMS API.")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        try await Trent.runReportingFailures {
            let configuration = try options.load()
            try await TrentServer(configuration: configuration).run()
        }
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Prepare the PKCS#11 token.", subcommands: [TokenInit.self])
}

struct TokenInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the domain key in the configured token (and, in embedded mode, the SoftHSM token itself).")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        try await Trent.runReportingFailures {
            let configuration = try options.load()
            let token = try HSMBootstrap(configuration: configuration).openToken(createMissing: true)
            defer { token.module.finalize() }
            let created = try TokenKeys.ensure(in: token, labels: configuration.tokenKeyLabels)
            print(created.isEmpty
                ? "Token '\(token.label)' already holds Trent's keys ('\(configuration.hsm.domainKeyLabel)', '\(configuration.hsm.sealingKeyLabel)')."
                : "Created \(created.map { "'\($0)'" }.joined(separator: " and ")) in token '\(token.label)'.")
        }
    }
}

/// Wires the token, the store, the service and the HTTP server together, and runs them until SIGTERM/SIGINT.
struct TrentServer {
    let configuration: TrentConfiguration

    func run() async throws {
        var logger = Logger(label: "trent")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
        try SecretFile.makeDirectory(configuration.dataDirectoryURL)

        let bootstrap = HSMBootstrap(configuration: configuration)
        let token = try bootstrap.openToken(createMissing: configuration.hsm.embeddedSoftHSM)
        defer { token.module.finalize() }
        if configuration.hsm.embeddedSoftHSM {
            try TokenKeys.ensure(in: token, labels: configuration.tokenKeyLabels)
        }

        let threadPool = NIOThreadPool(numberOfThreads: configuration.hsm.threads)
        threadPool.start()
        do {
            try await serve(token: token, threadPool: threadPool, logger: logger)
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
        try await threadPool.shutdownGracefully()
    }

    private func serve(token: Token, threadPool: NIOThreadPool, logger: Logger) async throws {

        let provider = try PKCS11KeyProvider(
            token: token,
            configuration: .init(keyLabels: configuration.tokenKeyLabels, handleCacheCapacity: configuration.hsm.handleCacheCapacity),
            threadPool: threadPool, logger: logger)
        let store = try SQLiteMetadataStore(path: configuration.sqliteFile)
        let location = ServiceLocation(region: configuration.service.region, accountID: configuration.service.accountId)
        let service = KeyManagementService(
            configuration: .init(
                location: location, nonceBudget: configuration.nonceBudget.perBackingKey,
                nonceReservationBlock: configuration.nonceBudget.reservationBlock),
            provider: provider, store: store, logger: logger)

        let credential = try CredentialBootstrap(configuration: configuration).credential()
        let verifier = SigV4Verifier(region: location.region, credentials: StaticCredentialProvider([credential.credential]))
        let http = KMSHTTPServer(service: service, verifier: verifier, logger: logger)
        let endpoint = "http://\(configuration.server.host):\(configuration.server.port)"
        let app = Application(
            router: http.router(),
            configuration: .init(address: .hostname(configuration.server.host, port: configuration.server.port), serverName: "Trent"),
            onServerRunning: { _ in
                Self.printBanner(endpoint: endpoint, region: location.region, credential: credential)
            },
            logger: logger)
        let sweeper = KeyDeletionSweeper(
            service: service, interval: .seconds(configuration.keyDeletion.sweepIntervalSeconds), logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [app, sweeper], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// What a developer needs to point the AWS CLI at this server. The secret is shown only when Trent
    /// generated it; configured secrets are never printed.
    static func printBanner(endpoint: String, region: String, credential: CredentialBootstrap.Result) {
        var lines = ["Trent is serving the AWS KMS API at \(endpoint)", "Use it with:"]
        lines.append("  export AWS_ACCESS_KEY_ID=\(credential.credential.accessKeyID)")
        if credential.generated {
            lines.append("  export AWS_SECRET_ACCESS_KEY=\(credential.credential.secretAccessKey)")
        } else {
            lines.append("  export AWS_SECRET_ACCESS_KEY=<the secret you configured>")
        }
        lines.append("  export AWS_DEFAULT_REGION=\(region)")
        lines.append("  export AWS_ENDPOINT_URL_KMS=\(endpoint)")
        FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}

/// Destroys keys whose deletion window has ended, every `interval`, until graceful shutdown.
struct KeyDeletionSweeper: Service {
    let service: KeyManagementService
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await service.destroyExpiredKeys()
                } catch {
                    logger.error("key deletion sweep failed; retrying at the next interval", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}

/// The access key Trent verifies SigV4 against: from the environment or configuration, or generated on
/// first run and kept in `<dataDirectory>/credentials.json` (mode 0600).
struct CredentialBootstrap {
    struct Result {
        var credential: Credential
        var generated: Bool
    }

    private struct Stored: Codable {
        var accessKeyId: String
        var secretAccessKey: String
    }

    let configuration: TrentConfiguration

    func credential() throws -> Result {
        let environment = ProcessInfo.processInfo.environment
        let accountID = configuration.service.accountId
        let principal = configuration.principalARN
        if !configuration.credentials.accessKeyId.isEmpty {
            var secret = environment["TRENT_SECRET_ACCESS_KEY"] ?? ""
            if secret.isEmpty, !configuration.credentials.secretAccessKeyFile.isEmpty {
                secret = (try? String(contentsOfFile: configuration.credentials.secretAccessKeyFile, encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            }
            guard !secret.isEmpty else {
                throw StartupError("access key \(configuration.credentials.accessKeyId) has no secret: set TRENT_SECRET_ACCESS_KEY or credentials.secretAccessKeyFile")
            }
            return Result(
                credential: Credential(accessKeyID: configuration.credentials.accessKeyId, secretAccessKey: secret, accountID: accountID, principalARN: principal),
                generated: false)
        }
        let file = configuration.dataDirectoryURL.appendingPathComponent("credentials.json")
        if let data = FileManager.default.contents(atPath: file.path) {
            guard let stored = try? JSONDecoder().decode(Stored.self, from: data) else {
                throw StartupError("cannot read \(file.path): delete it to generate new credentials")
            }
            return Result(
                credential: Credential(accessKeyID: stored.accessKeyId, secretAccessKey: stored.secretAccessKey, accountID: accountID, principalARN: principal),
                generated: true)
        }
        let stored = Stored(accessKeyId: "AKIA" + Self.random(16, alphabet: "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
                            secretAccessKey: Self.random(40, alphabet: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try SecretFile.write(String(decoding: try encoder.encode(stored), as: UTF8.self), to: file)
        return Result(
            credential: Credential(accessKeyID: stored.accessKeyId, secretAccessKey: stored.secretAccessKey, accountID: accountID, principalARN: principal),
            generated: true)
    }

    private static func random(_ count: Int, alphabet: String) -> String {
        let characters = Array(alphabet)
        var generator = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in characters[Int.random(in: 0..<characters.count, using: &generator)] })
    }
}
