import Foundation
import KMS
import KMSHSM
import KMSServer
import Logging
import Yams

/// Every setting of Trent. Defaults are compiled in (and documented, key by key, in `Config/trent.yaml`);
/// a YAML file overrides them, and `TRENT_*` environment variables override the file. Secrets (the HSM PIN,
/// the secret access key) come only from the environment or from a file, never from the YAML or the command line.
struct TrentConfiguration: Codable, Equatable {
    /// The listener and the limits it puts on each client (Config/trent.yaml says why these values).
    struct Server: Codable, Equatable {
        var host = "127.0.0.1"
        var port = 4599
        /// The request target plus the header names and values of one request.
        var maxHeaderBytes = 16 * 1024
        /// Header fields of one request, trailers included.
        var maxHeaderFields = 100
        var maxBodyBytes = 1 << 20
        /// From a request's first byte to its last.
        var readTimeoutSeconds = 30
        /// A connection with no request under way is closed after this long.
        var idleTimeoutSeconds = 60
        var maxConnections = 4096
        /// HTTPS on the API listener: both files set, or neither (plain HTTP).
        var tls = TLS()
        /// Plain HTTP on a non-loopback address, for use behind a proxy that terminates TLS.
        var allowPlaintext = false
        /// After SIGTERM or SIGINT, how long requests in flight have to finish before their connections are closed.
        var shutdownGraceSeconds = 20
    }

    struct TLS: Codable, Equatable {
        /// PEM: the server certificate first, then its intermediates.
        var certificateFile = ""
        /// PEM, unencrypted.
        var privateKeyFile = ""
        /// PEM CA bundle; when set, clients must present a certificate that chains to it (mutual TLS).
        var clientCAFile = ""
    }

    /// The admin listener: `/metrics`, `/health` and `/ready`, plain HTTP, apart from the API (AdminServer.swift).
    struct Admin: Codable, Equatable {
        var host = "127.0.0.1"
        /// 0 turns the admin listener off.
        var port = 4600
    }

    struct Service: Codable, Equatable {
        /// The default Region: CLI subcommands act in it, and a store from before Regions is assigned to it. Always
        /// served, listed in `regions` or not.
        var region = "us-east-1"
        /// The Regions served: a request acts in the Region of its SigV4 scope, which must be one of them.
        var regions = Self.commercialRegions
        var accountId = "111122223333"

        /// AWS's commercial Regions (the `aws` partition of botocore's endpoints.json, 2025).
        static let commercialRegions = [
            "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
            "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
            "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2",
            "eu-west-3", "il-central-1", "me-central-1", "me-south-1", "mx-central-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1",
            "us-west-2",
        ]

        /// A Region name as AWS spells them: lowercase letters, digits and hyphens (`us-east-1`).
        static func isValidRegion(_ name: String) -> Bool {
            (1...32).contains(name.utf8.count) && name.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2d }
        }
    }

    struct HSM: Codable, Equatable {
        /// A token Trent creates and owns in the data directory: `softhsm2`, `nss-softoken`, or `none` for a token
        /// you manage (a hardware HSM).
        var embeddedToken = "softhsm2"
        /// The HSM profile (`Config/hsm/<name>.json`, or a path); empty means the embedded token's, else softhsm2.
        var profile = ""
        /// Where profiles are looked up; empty means ./Config/hsm, the Config/hsm of the package the binary was built in, /etc/trent/hsm.
        var profileDirectory = ""
        /// Path of the PKCS#11 module; empty means the profile's default module.
        var module = ""
        var tokenLabel = "trent"
        /// A file holding the user PIN (the environment variable TRENT_HSM_PIN wins over it).
        var pinFile = ""
        /// Passed to C_Initialize in pReserved (NSS softoken needs `configdir=...`).
        var initString = ""
        var domainKeyLabel = "trent-domain-key"
        var sealingKeyLabel = "trent-sealing-key"
        /// Threads that make blocking PKCS#11 calls; each uses its own session.
        var threads = 4
        /// Backing keys kept unwrapped in the token at once.
        var handleCacheCapacity = 10_000
        /// HSM tasks that may wait for a thread; one more is refused at once (DependencyTimeoutException).
        var queueDepth = 256
        /// The deadline of each HSM task in seconds; 0 means the HSM profile's `deadlines.callSeconds`.
        var callTimeoutSeconds: Double = 0
    }

    struct Store: Codable, Equatable {
        /// The SQLite file; empty means `<dataDirectory>/trent.sqlite`.
        var sqlitePath = ""
    }

    struct Credentials: Codable, Equatable {
        /// Empty means: generated on first run, stored sealed, and shown once.
        var accessKeyId = ""
        /// A file holding the secret access key (TRENT_SECRET_ACCESS_KEY wins over it).
        var secretAccessKeyFile = ""
        /// Empty means `arn:aws:iam::<accountId>:user/trent-admin`.
        var principalArn = ""
    }

    struct KeyDeletion: Codable, Equatable {
        var sweepIntervalSeconds = 60
    }

    struct Audit: Codable, Equatable {
        /// Empty means `<dataDirectory>/audit`.
        var directory = ""
        /// A signed digest is written after this many records...
        var recordsPerDigest = 1_000
        /// ...and at least this often while records arrive, and at shutdown.
        var digestIntervalSeconds = 300
        /// records.jsonl is rotated once it holds this many bytes (0: never by size)...
        var rotateBytes = 256 << 20
        /// ...or once its first record is this old (0: never by age); checked as records arrive.
        var rotateSeconds = 86_400
    }

    struct NonceBudget: Codable, Equatable {
        /// AES-GCM encryptions per backing-key version before Trent moves the key to a fresh one.
        var perBackingKey: UInt64 = 1 << 32
        /// Encryptions reserved durably at a time.
        var reservationBlock: UInt64 = 1 << 16
    }

    /// Request quotas as AWS KMS has them (Config/trent.yaml and docs/operations.md say why they are on).
    struct Quotas: Codable, Equatable {
        var enabled = true
        /// Requests a second per account, by quota (RequestQuotas.swift); 0 means not limited.
        var rates: [String: Double] = RequestQuotas.awsDefaultRates
        /// Accounts whose quotas differ: each entry's rates replace `rates` for that account.
        var accounts: [AccountQuotas] = []
    }

    struct AccountQuotas: Codable, Equatable {
        var account: String
        var rates: [String: Double]
    }

    struct Log: Codable, Equatable {
        /// trace, debug (adds a line per successful request), info (a line per failed one), notice, warning, error, critical.
        var level = "info"
        /// `text` (swift-log's lines) or `json` (one JSON object per line, for log shippers).
        var format = "text"
    }

    var server = Server()
    var admin = Admin()
    var service = Service()
    var dataDirectory = ".trent"
    var hsm = HSM()
    var store = Store()
    var credentials = Credentials()
    var keyDeletion = KeyDeletion()
    var audit = Audit()
    var nonceBudget = NonceBudget()
    var quotas = Quotas()
    var log = Log()
    /// PKCS#11 tokens offered to custom key stores (KeyStoreConfiguration.swift); none by default.
    var keyStores: [KeyStore] = []

    init() {}

    /// Loads the configuration: defaults, then the YAML file (`path`, else `TRENT_CONFIG`, else
    /// `Config/trent.yaml` when it exists), then the environment.
    static func load(path: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> TrentConfiguration {
        var configuration = TrentConfiguration()
        let file = path ?? environment["TRENT_CONFIG"]
        if let file {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw StartupError("cannot read the configuration file \(file)")
            }
            configuration = try parse(text, source: file)
        }
        try configuration.applyEnvironment(environment)
        return configuration
    }

    /// Parses YAML over the defaults: a key the file leaves out keeps its default, and a key that is not a
    /// setting is refused (a typo must not silently fall back to a default).
    static func parse(_ text: String, source: String) throws -> TrentConfiguration {
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: text)
        } catch {
            throw StartupError("cannot parse \(source): \(error)")
        }
        guard let loaded else { return TrentConfiguration() }
        guard let overrides = loaded as? [String: Any] else { throw StartupError("\(source) must be a mapping of settings") }
        try checkKeyStoreEntries(overrides, source: source)
        do {
            let defaults = try JSONSerialization.jsonObject(with: JSONEncoder().encode(TrentConfiguration())) as? [String: Any] ?? [:]
            let merged = try merge(overrides, into: defaults, path: "", source: source)
            let configuration = try JSONDecoder().decode(TrentConfiguration.self, from: JSONSerialization.data(withJSONObject: merged))
            try configuration.validate()
            return configuration
        } catch let error as StartupError {
            throw error
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.dataCorrupted(context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw StartupError("\(source): setting '\(key)' has the wrong type")
        } catch {
            throw StartupError("cannot read \(source): \(error)")
        }
    }

    private static func merge(_ overrides: [String: Any], into defaults: [String: Any], path: String, source: String) throws -> [String: Any] {
        var result = defaults
        for (key, value) in overrides {
            let name = path.isEmpty ? key : "\(path).\(key)"
            guard let current = defaults[key] else { throw StartupError("\(source): '\(name)' is not a Trent setting") }
            if let section = current as? [String: Any] {
                guard let nested = value as? [String: Any] else { throw StartupError("\(source): '\(name)' must be a mapping") }
                result[key] = try merge(nested, into: section, path: name, source: source)
            } else {
                result[key] = value
            }
        }
        return result
    }

    mutating func applyEnvironment(_ environment: [String: String]) throws {
        func string(_ name: String, _ apply: (String) -> Void) {
            if let value = environment[name], !value.isEmpty { apply(value) }
        }
        func number<T: FixedWidthInteger>(_ name: String, _ apply: (T) -> Void) throws {
            guard let text = environment[name], !text.isEmpty else { return }
            guard let value = T(text) else { throw StartupError("\(name) must be a whole number, not '\(text)'") }
            apply(value)
        }
        string("TRENT_HOST") { server.host = $0 }
        try number("TRENT_PORT") { server.port = $0 }
        string("TRENT_ADMIN_HOST") { admin.host = $0 }
        try number("TRENT_ADMIN_PORT") { admin.port = $0 }
        try number("TRENT_MAX_HEADER_BYTES") { server.maxHeaderBytes = $0 }
        try number("TRENT_MAX_HEADER_FIELDS") { server.maxHeaderFields = $0 }
        try number("TRENT_MAX_BODY_BYTES") { server.maxBodyBytes = $0 }
        try number("TRENT_READ_TIMEOUT_SECONDS") { server.readTimeoutSeconds = $0 }
        try number("TRENT_IDLE_TIMEOUT_SECONDS") { server.idleTimeoutSeconds = $0 }
        try number("TRENT_MAX_CONNECTIONS") { server.maxConnections = $0 }
        string("TRENT_TLS_CERTIFICATE_FILE") { server.tls.certificateFile = $0 }
        string("TRENT_TLS_PRIVATE_KEY_FILE") { server.tls.privateKeyFile = $0 }
        string("TRENT_TLS_CLIENT_CA_FILE") { server.tls.clientCAFile = $0 }
        if let text = environment["TRENT_ALLOW_PLAINTEXT"], !text.isEmpty {
            switch text {
            case "true": server.allowPlaintext = true
            case "false": server.allowPlaintext = false
            default: throw StartupError("TRENT_ALLOW_PLAINTEXT must be true or false, not '\(text)'")
            }
        }
        try number("TRENT_SHUTDOWN_GRACE_SECONDS") { server.shutdownGraceSeconds = $0 }
        string("TRENT_REGION") { service.region = $0 }
        string("TRENT_REGIONS") { text in
            service.regions = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        string("TRENT_ACCOUNT_ID") { service.accountId = $0 }
        string("TRENT_DATA_DIR") { dataDirectory = $0 }
        string("TRENT_HSM_MODULE") { hsm.module = $0 }
        string("TRENT_HSM_TOKEN_LABEL") { hsm.tokenLabel = $0 }
        string("TRENT_HSM_PIN_FILE") { hsm.pinFile = $0 }
        string("TRENT_HSM_INIT_STRING") { hsm.initString = $0 }
        string("TRENT_HSM_DOMAIN_KEY_LABEL") { hsm.domainKeyLabel = $0 }
        string("TRENT_HSM_SEALING_KEY_LABEL") { hsm.sealingKeyLabel = $0 }
        string("TRENT_HSM_EMBEDDED_TOKEN") { hsm.embeddedToken = $0 }
        string("TRENT_HSM_PROFILE") { hsm.profile = $0 }
        string("TRENT_HSM_PROFILE_DIR") { hsm.profileDirectory = $0 }
        try number("TRENT_HSM_THREADS") { hsm.threads = $0 }
        try number("TRENT_HSM_HANDLE_CACHE") { hsm.handleCacheCapacity = $0 }
        try number("TRENT_HSM_QUEUE_DEPTH") { hsm.queueDepth = $0 }
        if let text = environment["TRENT_HSM_CALL_TIMEOUT_SECONDS"], !text.isEmpty {
            guard let seconds = Double(text), seconds.isFinite, seconds >= 0 else {
                throw StartupError("TRENT_HSM_CALL_TIMEOUT_SECONDS must be a number of seconds, not '\(text)'")
            }
            hsm.callTimeoutSeconds = seconds
        }
        string("TRENT_SQLITE_PATH") { store.sqlitePath = $0 }
        string("TRENT_ACCESS_KEY_ID") { credentials.accessKeyId = $0 }
        string("TRENT_SECRET_ACCESS_KEY_FILE") { credentials.secretAccessKeyFile = $0 }
        string("TRENT_PRINCIPAL_ARN") { credentials.principalArn = $0 }
        try number("TRENT_DELETION_SWEEP_SECONDS") { keyDeletion.sweepIntervalSeconds = $0 }
        string("TRENT_AUDIT_DIR") { audit.directory = $0 }
        try number("TRENT_AUDIT_RECORDS_PER_DIGEST") { audit.recordsPerDigest = $0 }
        try number("TRENT_AUDIT_DIGEST_SECONDS") { audit.digestIntervalSeconds = $0 }
        try number("TRENT_AUDIT_ROTATE_BYTES") { audit.rotateBytes = $0 }
        try number("TRENT_AUDIT_ROTATE_SECONDS") { audit.rotateSeconds = $0 }
        try number("TRENT_NONCE_BUDGET") { nonceBudget.perBackingKey = $0 }
        try number("TRENT_NONCE_RESERVATION_BLOCK") { nonceBudget.reservationBlock = $0 }
        string("TRENT_LOG_LEVEL") { log.level = $0 }
        string("TRENT_LOG_FORMAT") { log.format = $0 }
        if let text = environment["TRENT_QUOTAS_ENABLED"], !text.isEmpty {
            switch text.lowercased() {
            case "true", "1", "yes": quotas.enabled = true
            case "false", "0", "no": quotas.enabled = false
            default: throw StartupError("TRENT_QUOTAS_ENABLED must be true or false, not '\(text)'")
            }
        }
        try validate()
    }

    func validate() throws {
        guard (1...65535).contains(server.port) else { throw StartupError("server.port must be 1 to 65535, not \(server.port)") }
        guard (0...65535).contains(admin.port) else { throw StartupError("admin.port must be 0 (off) to 65535, not \(admin.port)") }
        guard admin.port != server.port else {
            throw StartupError("admin.port must differ from server.port (\(server.port)): metrics and probes never share the API's listener")
        }
        for region in [service.region] + service.regions where !Service.isValidRegion(region) {
            throw StartupError("service.region and service.regions must name Regions such as us-east-1, not '\(region)'")
        }
        guard !admin.host.isEmpty else { throw StartupError("admin.host must not be empty (127.0.0.1 keeps the admin listener local)") }
        for (name, value) in [
            ("maxHeaderBytes", server.maxHeaderBytes), ("maxHeaderFields", server.maxHeaderFields), ("maxBodyBytes", server.maxBodyBytes),
            ("readTimeoutSeconds", server.readTimeoutSeconds), ("idleTimeoutSeconds", server.idleTimeoutSeconds),
            ("maxConnections", server.maxConnections),
        ] where value < 1 {
            throw StartupError("server.\(name) must be at least 1, not \(value)")
        }
        try validateListener()
        guard hsm.threads >= 1 else { throw StartupError("hsm.threads must be at least 1") }
        guard ["softhsm2", "nss-softoken", "none"].contains(hsm.embeddedToken) else {
            throw StartupError("hsm.embeddedToken must be softhsm2, nss-softoken or none, not '\(hsm.embeddedToken)'")
        }
        guard hsm.handleCacheCapacity >= 1 else { throw StartupError("hsm.handleCacheCapacity must be at least 1") }
        guard hsm.queueDepth >= 0 else { throw StartupError("hsm.queueDepth must not be negative") }
        guard hsm.callTimeoutSeconds >= 0, hsm.callTimeoutSeconds <= 3600 else {
            throw StartupError("hsm.callTimeoutSeconds must be 0 (the profile's deadline) to 3600")
        }
        guard nonceBudget.perBackingKey >= 1, nonceBudget.reservationBlock >= 1 else {
            throw StartupError("nonceBudget values must be at least 1")
        }
        guard nonceBudget.perBackingKey <= 1 << 32 else {
            throw StartupError("nonceBudget.perBackingKey must not exceed 2^32 (AES-GCM with random IVs)")
        }
        guard keyDeletion.sweepIntervalSeconds >= 1 else { throw StartupError("keyDeletion.sweepIntervalSeconds must be at least 1") }
        guard audit.recordsPerDigest >= 1, audit.digestIntervalSeconds >= 1 else {
            throw StartupError("audit.recordsPerDigest and audit.digestIntervalSeconds must be at least 1")
        }
        guard audit.rotateBytes >= 0, audit.rotateSeconds >= 0 else {
            throw StartupError("audit.rotateBytes and audit.rotateSeconds must be 0 (never) or more")
        }
        guard Logger.Level(rawValue: log.level) != nil else {
            throw StartupError("log.level must be trace, debug, info, notice, warning, error or critical, not '\(log.level)'")
        }
        guard ["text", "json"].contains(log.format) else { throw StartupError("log.format must be text or json, not '\(log.format)'") }
        try validateQuotas()
        try validateKeyStores()
    }

    private func validateQuotas() throws {
        func check(_ rates: [String: Double], _ path: String) throws {
            for (name, rate) in rates.sorted(by: { $0.key < $1.key }) {
                guard RequestQuotas.quotaNames.contains(name) else {
                    throw StartupError("\(path).\(name) is not a request quota (see Config/trent.yaml for their names)")
                }
                guard rate.isFinite, rate >= 0 else { throw StartupError("\(path).\(name) must be 0 (no limit) or a positive rate") }
            }
        }
        try check(quotas.rates, "quotas.rates")
        var seen: Set<String> = []
        for entry in quotas.accounts {
            guard Account.isValidID(entry.account) else {
                throw StartupError("quotas.accounts: '\(entry.account)' is not an account id (12 digits)")
            }
            guard seen.insert(entry.account).inserted else { throw StartupError("quotas.accounts names account \(entry.account) twice") }
            try check(entry.rates, "quotas.accounts[\(entry.account)].rates")
        }
    }

    /// The request quotas the handler applies; nil when `quotas.enabled` is false.
    var requestQuotas: RequestQuotas? {
        guard quotas.enabled else { return nil }
        var accountRates: [String: [String: Double]] = [:]
        for entry in quotas.accounts { accountRates[entry.account] = entry.rates }
        return RequestQuotas(rates: quotas.rates, accountRates: accountRates)
    }

    var dataDirectoryURL: URL { URL(fileURLWithPath: dataDirectory, isDirectory: true).standardizedFileURL }
    var auditDirectoryURL: URL {
        audit.directory.isEmpty ? dataDirectoryURL.appendingPathComponent("audit", isDirectory: true) : URL(fileURLWithPath: audit.directory, isDirectory: true)
    }
    var sqliteFile: String { store.sqlitePath.isEmpty ? dataDirectoryURL.appendingPathComponent("trent.sqlite").path : store.sqlitePath }
    /// The configured administrator's secret: TRENT_SECRET_ACCESS_KEY, else the secret file.
    func configuredSecret(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        var secret = environment["TRENT_SECRET_ACCESS_KEY"] ?? ""
        if secret.isEmpty, !credentials.secretAccessKeyFile.isEmpty {
            guard let text = try? String(contentsOfFile: credentials.secretAccessKeyFile, encoding: .utf8) else {
                throw StartupError("cannot read the secret access key file \(credentials.secretAccessKeyFile)")
            }
            secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard !secret.isEmpty else {
            throw StartupError("access key \(credentials.accessKeyId) has no secret: set TRENT_SECRET_ACCESS_KEY or credentials.secretAccessKeyFile")
        }
        return secret
    }

    var isEmbeddedToken: Bool { hsm.embeddedToken != "none" }
    var profileName: String { hsm.profile.isEmpty ? (isEmbeddedToken ? hsm.embeddedToken : "softhsm2") : hsm.profile }

    /// Where HSM profiles are looked up, in order.
    var profileDirectories: [URL] {
        if !hsm.profileDirectory.isEmpty { return [URL(fileURLWithPath: hsm.profileDirectory, isDirectory: true)] }
        // A binary built in a checkout (<package>/.build/.../trent) finds the package's Config/hsm above it.
        var packageProfiles: [URL] = []
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = directory.appendingPathComponent("Config/hsm", isDirectory: true)
            if FileManager.default.fileExists(atPath: candidate.path) {
                packageProfiles.append(candidate)
                break
            }
            directory = directory.deletingLastPathComponent()
        }
        return [URL(fileURLWithPath: "Config/hsm", isDirectory: true)] + packageProfiles + [URL(fileURLWithPath: "/etc/trent/hsm", isDirectory: true)]
    }

    var connectionLimits: ConnectionLimits {
        ConnectionLimits(
            maxHeaderBytes: server.maxHeaderBytes, maxHeaderFields: server.maxHeaderFields, readTimeout: .seconds(server.readTimeoutSeconds),
            idleTimeout: .seconds(server.idleTimeoutSeconds), maxConnections: server.maxConnections)
    }
    var tokenKeyLabels: TokenKeyLabels { TokenKeyLabels(domainKey: hsm.domainKeyLabel, sealingKey: hsm.sealingKeyLabel) }
    var principalARN: String { credentials.principalArn.isEmpty ? "arn:aws:iam::\(service.accountId):user/trent-admin" : credentials.principalArn }
}

/// A problem that stops startup, printed as one line that says what to fix.
struct StartupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
