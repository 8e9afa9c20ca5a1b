import ArgumentParser
import Foundation
import Hummingbird
import KMS
import KMSAudit
import KMSHSM
import KMSProtocol
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
        subcommands: [
            Serve.self, TokenCommand.self, IdentityCommand.self, AuditCommand.self, StoreCommand.self, BenchCommand.self,
            HealthcheckCommand.self,
        ],
        defaultSubcommand: Serve.self)

    /// Runs `body`, printing a startup failure as one line (on stderr, or a JSON log line under `log.format: json`)
    /// and exiting 1, never a stack trace.
    static func runReportingFailures(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as StartupError {
            TrentLogging.writeFailure("\(error.description)")
            throw ExitCode.failure
        } catch let error as HSMSetupError {
            TrentLogging.writeFailure("\(error.description)")
            throw ExitCode.failure
        } catch let error as KMSError {
            TrentLogging.writeFailure("\(error.message)")
            throw ExitCode.failure
        } catch let error as PKCS11Error {
            TrentLogging.writeFailure("PKCS#11 failure: \(error)")
            throw ExitCode.failure
        } catch let error as ExitCode {
            throw error
        } catch {
            TrentLogging.writeFailure("\(error)")
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
        commandName: "token", abstract: "Prepare and check the PKCS#11 token.", subcommands: [TokenInit.self, TokenProbeCommand.self])
}

struct TokenInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the domain key in the configured token (and, in embedded mode, the SoftHSM token itself).")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        try await Trent.runReportingFailures {
            let configuration = try options.load()
            let bootstrap = HSMBootstrap(configuration: configuration)
            try bootstrap.withSetupToken(createMissing: configuration.isEmbeddedToken) { token, profile in
                try TokenProbe.requireMechanisms(of: token, profile: profile)
                let created = try bootstrap.ensureKeys(in: token, profile: profile)
                print(created.isEmpty
                    ? "Token '\(token.label)' already holds Trent's keys ('\(configuration.hsm.domainKeyLabel)', '\(configuration.hsm.sealingKeyLabel)')."
                    : "Created \(created.map { "'\($0)'" }.joined(separator: " and ")) in token '\(token.label)'.")
            }
        }
    }
}

/// `trent token probe`: the token's information, its mechanisms and a pass/fail line per Trent feature, so an
/// operator can check a new HSM (and its profile) before trusting it.
struct TokenProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe", abstract: "Show the token, its mechanisms, and which Trent features it supports. Exits 1 when Trent cannot serve on it.")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        var usable = true
        try await Trent.runReportingFailures {
            let configuration = try options.load()
            try HSMBootstrap(configuration: configuration).withSetupToken(createMissing: configuration.isEmbeddedToken) { token, profile in
                let info = try token.module.tokenInfo(slot: token.slot)
                var lines = [
                    "Token:        \(info.label) (slot \(token.slot))",
                    "Manufacturer: \(info.manufacturer)",
                    "Model:        \(info.model)  serial \(info.serialNumber)",
                    "Module:       \(token.module.path)",
                    "Profile:      \(profile.name) (\(profile.displayName); \(profile.tested ? "tested: \(profile.testedVersions ?? "")" : "untested"))",
                ]
                let mechanisms = try token.module.mechanisms(slot: token.slot).sorted { $0.rawValue < $1.rawValue }
                lines.append("Mechanisms (\(mechanisms.count)):")
                lines.append(contentsOf: mechanisms.map { "  0x\(String($0.rawValue, radix: 16, uppercase: true).leftPadded(8)) \($0.name)" })
                lines.append("Trent features:")
                let checks = try TokenProbe.run(on: token, profile: profile)
                for check in checks {
                    let verdict = check.passed ? "PASS" : (check.required ? "FAIL" : "n/a ")
                    lines.append("  \(verdict)  \(check.feature): \(check.detail)")
                }
                usable = checks.filter(\.required).allSatisfy(\.passed)
                lines.append(usable ? "Trent can serve symmetric keys on this token." : "Trent cannot serve on this token as configured.")
                print(lines.joined(separator: "\n"))
            }
        }
        if !usable { throw ExitCode.failure }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

/// Runs the service until SIGTERM/SIGINT: the token, the store, the identity directory, the HTTP server and the
/// key-deletion sweeper.
struct TrentServer {
    let configuration: TrentConfiguration

    func run() async throws {
        // First, so that every metric object (PKCS#11 calls from the first login on) is made in the registry.
        if configuration.admin.port != 0 { TrentMetrics.bootstrap() }
        // Read before the token opens, so a bad file stops startup at once.
        let tls = try configuration.listenerTLS()
        let storeLock = try Self.lockStore(configuration)
        defer { withExtendedLifetime(storeLock) {} }
        let runtime = try await TrentRuntime.open(configuration, createMissing: configuration.isEmbeddedToken)
        do {
            try await serve(runtime, tls: tls)
        } catch {
            // A failure before the service group ran; once it runs, its shutdown closes the tokens.
            await runtime.shutdown()
            throw error
        }
    }

    private func serve(_ runtime: TrentRuntime, tls: ListenerTLS?) async throws {
        let logger = runtime.logger
        let location = runtime.service.location
        let administrator = try await bootstrapAdministrator(runtime)
        // Stores an operator left connected come back connected (or FAILED, saying why).
        await runtime.service.reconnectCustomKeyStores()
        try await runtime.service.carryOverLegacyBindings()
        let verifier = SigV4Verifier(regions: location.regions, credentials: DirectoryCredentialProvider(directory: runtime.directory))
        let trail = try await AuditTrail(
            directory: configuration.auditDirectoryURL, signer: TokenDigestSigner(provider: runtime.provider),
            recordsPerDigest: configuration.audit.recordsPerDigest, rotation: configuration.audit.rotation, logger: logger)
        let http = KMSHTTPServer(
            handler: KMSRequestHandler(
                service: runtime.service, verifier: verifier, audit: trail, quotas: configuration.requestQuotas, logger: logger),
            maximumBodySize: configuration.server.maxBodyBytes)
        let endpoint = configuration.endpoint
        raiseOpenFileLimit(logger: logger)
        let app = Application(
            router: http.router(),
            server: try configuration.listener(tls: tls, logger: logger),
            configuration: .init(address: .hostname(configuration.server.host, port: configuration.server.port), serverName: "Trent"),
            onServerRunning: { _ in
                if TrentLogging.isJSON {
                    Self.logBanner(endpoint: endpoint, region: location.region, administrator: administrator, logger: logger)
                } else {
                    Self.printBanner(endpoint: endpoint, region: location.region, administrator: administrator)
                }
            },
            logger: logger)
        let sweeper = KeyMaintenance(
            service: runtime.service, interval: .seconds(configuration.keyDeletion.sweepIntervalSeconds), logger: logger)
        let digests = AuditDigestService(trail: trail, interval: .seconds(configuration.audit.digestIntervalSeconds), logger: logger)
        let draining = Draining()
        let listener = BoundedShutdown(
            listener: app, grace: .seconds(configuration.server.shutdownGraceSeconds), closing: BoundedShutdown.closingTime,
            draining: draining, logger: logger)
        let admin: [any Service] = configuration.admin.port == 0 ? [] : [
            AdminServer(readiness: Readiness(token: runtime.token, store: runtime.store, trail: trail, draining: draining), registry: TrentMetrics.registry)
                .application(host: configuration.admin.host, port: configuration.admin.port, logger: logger)
        ]
        // Services stop in reverse order: the API listener first, then the admin listener (probes answer until the API
        // has stopped), the certificate reloader, then the digest writer closes the trail (signing its last digest in
        // the token), then the custom key stores' tokens, and Trent's own token last.
        let group = ServiceGroup(
            configuration: .init(
                services: [runtime.token, runtime.customKeyStoreTokens, digests, sweeper, CertificateReloader(certificate: tls?.certificate, logger: logger)]
                    + admin + [listener],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.notice("shutdown complete: the audit trail is closed and digested, the token closed")
    }

    /// Each connection holds a file descriptor, and a soft open-file limit is often 1024: raises it (within the hard
    /// limit) to fit server.maxConnections plus the token's, store's and audit trail's files, else says what to fix.
    private func raiseOpenFileLimit(logger: Logger) {
        #if canImport(Glibc)
        let openFiles = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let openFiles = RLIMIT_NOFILE
        #endif
        let needed = rlim_t(configuration.server.maxConnections) + 256
        var limit = rlimit()
        guard getrlimit(openFiles, &limit) == 0, limit.rlim_cur < needed else { return }
        limit.rlim_cur = min(needed, limit.rlim_max)
        if setrlimit(openFiles, &limit) != 0 || limit.rlim_cur < needed {
            logger.warning(
                "the open-file limit (ulimit -n) is too low for server.maxConnections: connections beyond it cannot be accepted",
                metadata: ["openFileLimit": "\(limit.rlim_cur)", "maxConnections": "\(configuration.server.maxConnections)"])
        }
    }

    /// The embedded default: one account with one administrator. A configured access key (TRENT_ACCESS_KEY_ID
    /// and its secret) is stored sealed; otherwise the first run generates one and shows it once.
    private func bootstrapAdministrator(_ runtime: TrentRuntime) async throws -> Administrator {
        var configured: (id: String, secret: String)?
        if !configuration.credentials.accessKeyId.isEmpty {
            configured = (configuration.credentials.accessKeyId, try configuration.configuredSecret())
        }
        let created = try await runtime.directory.bootstrapAdministrator(
            accountID: configuration.service.accountId, principalARN: configuration.principalARN, accessKey: configured)
        return Administrator(principalARN: configuration.principalARN, accessKeyID: created?.accessKeyID ?? configured?.id, newSecret: created?.secretAccessKey)
    }

    struct Administrator {
        var principalARN: String
        var accessKeyID: String?
        /// Only on the run that created the key: the one time its secret is shown.
        var newSecret: String?
    }

    /// The banner as one log line, for `log.format: json`. A generated secret is not written: JSON logs are meant for
    /// log shippers, where a secret would be kept and copied; the line says how to make a usable key instead.
    static func logBanner(endpoint: String, region: String, administrator: Administrator, logger: Logger) {
        var metadata: Logger.Metadata = [
            "endpoint": "\(endpoint)", "region": "\(region)", "administrator": "\(administrator.principalARN)",
        ]
        if let accessKeyID = administrator.accessKeyID { metadata["accessKeyId"] = "\(accessKeyID)" }
        logger.notice("Trent is serving the AWS KMS API", metadata: metadata)
        if administrator.newSecret != nil {
            logger.warning(
                "created the administrator; its secret is not written to a JSON log: make a key with trent identity create-access-key",
                metadata: ["administrator": "\(administrator.principalARN)"])
        }
    }

    /// What a developer needs to point the AWS CLI at this server. A secret is shown only the one time Trent
    /// generates it; it is stored sealed in the token and never printed again.
    static func printBanner(endpoint: String, region: String, administrator: Administrator) {
        var lines = ["Trent is serving the AWS KMS API at \(endpoint)"]
        if let secret = administrator.newSecret, let accessKeyID = administrator.accessKeyID {
            lines.append("Created the administrator \(administrator.principalARN). Its secret is shown only now; use it with:")
            lines.append("  export AWS_ACCESS_KEY_ID=\(accessKeyID)")
            lines.append("  export AWS_SECRET_ACCESS_KEY=\(secret)")
        } else {
            lines.append("Administrator: \(administrator.principalARN)\(administrator.accessKeyID.map { " (access key \($0))" } ?? ""). Use it with:")
            lines.append("  export AWS_ACCESS_KEY_ID=<its access key id>  AWS_SECRET_ACCESS_KEY=<its secret>")
            lines.append("  (new keys: trent identity create-access-key --principal \(administrator.principalARN))")
        }
        lines.append("  export AWS_DEFAULT_REGION=\(region)")
        lines.append("  export AWS_ENDPOINT_URL_KMS=\(endpoint)")
        FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}

/// Everything `trent` opens: Trent's token (an ``HSMToken``: its thread pool, login, recovery), the custom key
/// stores' tokens, the provider, the store, the service and the identity directory. Used by `serve` and by the
/// admin commands alike; `serve` runs the tokens as services, the commands ``shutdown()`` them.
struct TrentRuntime {
    let token: HSMToken
    let customKeyStoreTokens: PKCS11CustomKeyStoreTokens
    let provider: PKCS11KeyProvider
    let store: SQLiteMetadataStore
    let service: KeyManagementService
    let directory: IdentityDirectory
    let logger: Logger

    static func open(_ configuration: TrentConfiguration, createMissing: Bool) async throws -> TrentRuntime {
        TrentLogging.bootstrap(format: configuration.log.format)
        var logger = Logger(label: "trent")
        logger.logLevel = Logger.Level(rawValue: configuration.log.level) ?? .info
        try SecretFile.makeDirectory(configuration.dataDirectoryURL)
        let bootstrap = HSMBootstrap(configuration: configuration)
        let (setup, profile) = try bootstrap.openToken(createMissing: createMissing)
        do {
            try TokenProbe.requireMechanisms(of: setup, profile: profile)
            if configuration.isEmbeddedToken {
                try bootstrap.ensureKeys(in: setup, profile: profile)
            }
        } catch {
            setup.module.finalize()
            throw error
        }
        // The setup connection only checked the token; serving logs in on the HSMToken's own.
        setup.retire()
        let hsm = configuration.hsm
        let token: HSMToken
        do {
            token = try HSMToken(
                module: setup.module,
                settings: .init(
                    name: "token '\(hsm.tokenLabel)'", label: hsm.tokenLabel, pin: try bootstrap.readPIN(), profile: profile, threads: hsm.threads,
                    queueDepth: hsm.queueDepth, callTimeout: hsm.callTimeoutSeconds > 0 ? .milliseconds(Int64(hsm.callTimeoutSeconds * 1000)) : nil,
                    maxIdleSessions: max(64, hsm.threads * 2), handleCacheCapacity: hsm.handleCacheCapacity),
                logger: logger, prepare: PKCS11KeyProvider.preparation(labels: configuration.tokenKeyLabels, profile: profile))
        } catch {
            setup.module.finalize()
            throw error
        }
        let keyStoreTokens = PKCS11CustomKeyStoreTokens(
            declarations: try configuration.customKeyStoreDeclarations(mainModulePath: token.module.path),
            settings: .init(callTimeout: token.settings.callTimeout), logger: logger)
        do {
            let provider = try PKCS11KeyProvider(
                token: token, configuration: .init(keyLabels: configuration.tokenKeyLabels, profile: profile),
                customKeyStores: keyStoreTokens, logger: logger)
            let store = try SQLiteMetadataStore(path: configuration.sqliteFile, defaultRegion: configuration.service.region)
            let location = ServiceLocation(
                region: configuration.service.region, regions: Set(configuration.service.regions), accountID: configuration.service.accountId)
            let service = KeyManagementService(
                configuration: .init(
                    location: location, nonceBudget: configuration.nonceBudget.perBackingKey,
                    nonceReservationBlock: configuration.nonceBudget.reservationBlock),
                provider: provider, store: store, logger: logger, customKeyStoreTokens: keyStoreTokens)
            return TrentRuntime(
                token: token, customKeyStoreTokens: keyStoreTokens, provider: provider, store: store, service: service,
                directory: IdentityDirectory(store: store, provider: provider), logger: logger)
        } catch {
            await token.close()
            throw error
        }
    }

    /// For the commands: what the service group's graceful shutdown does for `serve`.
    func shutdown() async {
        for storeID in customKeyStoreTokens.connectedStores() { await customKeyStoreTokens.disconnect(storeID: storeID) }
        await token.close()
    }
}

/// Writes a signed audit digest every `interval`, and a final one when the service shuts down.
struct AuditDigestService: Service {
    let trail: AuditTrail
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                do {
                    try await trail.writeDigest()
                } catch {
                    logger.error("writing the audit digest failed; retrying at the next interval", metadata: ["error": "\(error)"])
                }
            }
        }
        try await trail.close()
    }
}

/// Every `interval`, until graceful shutdown: destroys keys whose deletion window has ended, rotates keys
/// whose rotation date has come, deletes imported material past its ValidTo, and writes the keys' last uses
/// (also at shutdown).
struct KeyMaintenance: Service {
    let service: KeyManagementService
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await service.destroyExpiredKeys()
                    try await service.rotateDueKeys()
                    try await service.expireImportedKeyMaterial()
                    try await service.flushKeyUsage()
                } catch {
                    logger.error("key maintenance failed; retrying at the next interval", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
        do {
            try await service.flushKeyUsage()
        } catch {
            logger.error("could not write the keys' last uses at shutdown", metadata: ["error": "\(error)"])
        }
    }
}

