import ArgumentParser
import Foundation
import KMS
import KMSHSM
import KMSSQLite
import NIOCore
import NIOHTTP1
import NIOPosix
import PKCS11

/// `trent bench`: starts a Trent server with its own token and store (or targets `--endpoint`), drives a
/// closed-loop load of real SigV4-signed requests over N connections for a fixed time per operation, measures the
/// HSM ceiling and the HTTP ceiling in the same run, and writes the figures as JSON and as a Markdown table.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure Trent's throughput and latency per operation against its HSM and HTTP ceilings.",
        subcommands: [Run.self, CeilingServer.self],
        defaultSubcommand: Run.self)

    /// The bare POST endpoint of the HTTP ceiling, started as a child process by `bench run`.
    struct CeilingServer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ceiling-server", abstract: "Serve the HTTP ceiling: POST / reads the body and answers fixed JSON.",
            shouldDisplay: false)
        @Option var host = "127.0.0.1"
        @Option var port: Int

        func run() async throws { try await BenchCeilingServer.run(host: host, port: port) }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the benchmark (the default).")

        @Option(help: "Seconds of measured load per operation.") var duration: Double = 3
        @Option(help: "Seconds of unmeasured warm-up before each measured load.") var warmup: Double = 1
        @Option(help: "Concurrent connections (closed loop: one request in flight per connection).") var connections = 32
        @Option(help: "Seconds of the mixed run (every operation, weighted).") var mixDuration: Double?
        @Option(help: "Key counts for the Encrypt scale test, comma separated (empty: skip it).") var scaleKeys = "1,1000,100000"
        @Option(help: "Seconds of the HSM ceiling loops (each, per thread count).") var hsmSeconds: Double = 2
        @Option(help: "hsm.threads of the server it starts (default: the server's default).") var hsmThreads: Int?
        @Option(help: "Where results.json and results.md go (a timestamped folder inside).") var output = "bench-results"
        @Option(help: "The server's data folder (default: a new temporary folder, removed afterwards).") var dataDir: String?
        @Option(help: "Operations to run, comma separated (default: all).") var operations: String?
        @Option(help: "Benchmark a running Trent (or any KMS) at this URL instead of starting one; needs --access-key-id and --secret-access-key. No ceilings or scale test.")
        var endpoint: String?
        @Option var accessKeyId: String?
        @Option var secretAccessKey: String?
        @Option(help: "Region of the credential scope.") var region = "us-east-1"
        @Flag(help: "Also run the Encrypt load against a moto server (moto_server on PATH or in .venv/bin).") var compare = false
        @Flag(help: "Keep the data folder.") var keep = false

        func run() async throws {
            ChildProcess.stopChildrenOnSignals()
            do {
                try await Bench(options: self).run()
            } catch let error as BenchError {
                FileHandle.standardError.write(Data("trent bench: \(error.description)\n".utf8))
                throw ExitCode.failure
            }
        }
    }
}

/// The operations the load generator knows: name, and how to make a request body from the keys at hand.
struct BenchOperation: Sendable {
    var name: String
    var target: String
    var ceiling: String?
    var makeBody: @Sendable (BenchKeys) -> [UInt8]
}

/// The keys and ciphertexts requests are made from.
struct BenchKeys: Sendable {
    var symmetric: [String]
    var hmac: String?
    var ecc: String?
    var rsa: String?
    var ciphertext: String
    var symmetricKey: String {
        symmetric.count == 1 ? symmetric[0] : symmetric[Int.random(in: 0..<symmetric.count)]
    }
}

enum Body {
    static let plaintext32 = Data(repeating: 0x61, count: 32).base64EncodedString()
    static let plaintext4K = Data(repeating: 0x62, count: 4096).base64EncodedString()
    static let message32 = Data(repeating: 0x63, count: 32).base64EncodedString()

    static func json(_ pairs: KeyValuePairs<String, String>) -> [UInt8] {
        Array(("{" + pairs.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",") + "}").utf8)
    }
}

extension BenchOperation {
    static let all: [BenchOperation] = [
        .init(name: "Encrypt 32 B", target: "Encrypt", ceiling: "gcm-encrypt-32") { Body.json(["KeyId": $0.symmetricKey, "Plaintext": Body.plaintext32]) },
        .init(name: "Encrypt 4 KiB", target: "Encrypt", ceiling: "gcm-encrypt-4096") { Body.json(["KeyId": $0.symmetricKey, "Plaintext": Body.plaintext4K]) },
        .init(name: "Decrypt", target: "Decrypt", ceiling: "gcm-decrypt-32") { Body.json(["CiphertextBlob": $0.ciphertext]) },
        .init(name: "GenerateDataKey AES_256", target: "GenerateDataKey", ceiling: "random-32+gcm-encrypt-32") {
            Body.json(["KeyId": $0.symmetricKey, "KeySpec": "AES_256"])
        },
        .init(name: "GenerateDataKeyWithoutPlaintext", target: "GenerateDataKeyWithoutPlaintext", ceiling: "random-32+gcm-encrypt-32") {
            Body.json(["KeyId": $0.symmetricKey, "KeySpec": "AES_256"])
        },
        .init(name: "ReEncrypt", target: "ReEncrypt", ceiling: "gcm-decrypt+encrypt-32") {
            Body.json(["CiphertextBlob": $0.ciphertext, "DestinationKeyId": $0.symmetric[0]])
        },
        .init(name: "DescribeKey", target: "DescribeKey", ceiling: nil) { Body.json(["KeyId": $0.symmetricKey]) },
        .init(name: "GenerateMac HMAC_SHA_256", target: "GenerateMac", ceiling: "hmac-sha256-32") {
            Body.json(["KeyId": $0.hmac ?? "", "Message": Body.message32, "MacAlgorithm": "HMAC_SHA_256"])
        },
        .init(name: "Sign ECDSA P-256", target: "Sign", ceiling: nil) {
            Body.json(["KeyId": $0.ecc ?? "", "Message": Body.message32, "MessageType": "RAW", "SigningAlgorithm": "ECDSA_SHA_256"])
        },
        .init(name: "Sign RSA-2048 PSS", target: "Sign", ceiling: nil) {
            Body.json(["KeyId": $0.rsa ?? "", "Message": Body.message32, "MessageType": "RAW", "SigningAlgorithm": "RSASSA_PSS_SHA_256"])
        },
    ]

    /// The mixed run's weights (percent).
    static let mix: [(String, Int)] = [
        ("Encrypt 32 B", 25), ("Encrypt 4 KiB", 5), ("Decrypt", 25), ("GenerateDataKey AES_256", 15),
        ("GenerateDataKeyWithoutPlaintext", 5), ("ReEncrypt", 5), ("DescribeKey", 10), ("GenerateMac HMAC_SHA_256", 5),
        ("Sign ECDSA P-256", 3), ("Sign RSA-2048 PSS", 2),
    ]
}

/// One row of the report.
struct OperationResult: Codable {
    var name: String
    var connections: Int
    var seconds: Double
    var requests: Int
    var requestsPerSecond: Double
    var errors: Int
    var firstError: String?
    var latency: LatencySummary
    var supported: Bool = true
    var note: String?
    /// Trent's requests/s over the HTTP ceiling's requests/s (same connections).
    var ratioToHTTPCeiling: Double?
    /// Trent's requests/s over the HSM ceiling's ops/s for the same PKCS#11 work.
    var hsmCeiling: String?
    var ratioToHSMCeiling: Double?
}

struct ScaleResult: Codable {
    var keys: Int
    var encrypt: OperationResult
    var ratioToOneKey: Double?
    var serverResidentMiB: Double?
}

struct BenchReport: Codable {
    var date: String
    var host: String
    var cores: Int
    var loadAverageBefore: String
    var loadAverageAfter: String?
    var connections: Int
    var durationSeconds: Double
    var warmupSeconds: Double
    var endpoint: String
    var serverHSMThreads: Int?
    var httpCeiling: OperationResult?
    var hsmCeiling: [String: HSMCeiling.Figure] = [:]
    var operations: [OperationResult] = []
    var mix: OperationResult?
    var mixPerOperation: [OperationResult] = []
    var createKey: OperationResult?
    var moto: OperationResult?
    var ratioToMoto: Double?
    var scale: [ScaleResult] = []
    var startupSecondsEmpty: Double?
    var startupSecondsAtScale: Double?
    var scaleKeyCount: Int?
    var keyCreationDirectPerSecond: Double?
    var serverResidentMiBAfterStart: Double?
    var serverResidentMiBAtScaleStart: Double?
    var serverResidentMiBAtScaleEnd: Double?
    var targets: [Target] = []

    struct Target: Codable {
        var target: String
        var measured: String
        var met: Bool
    }
}

final class Bench: @unchecked Sendable {
    let options: BenchCommand.Run
    let host = "127.0.0.1"
    var report: BenchReport
    let accessKeyID = "AKIABENCHMARK0000001"
    let secret = "benchmark/secret/0000000000000000000000000"
    var dataDirectory: URL!
    var server: ChildProcess?
    var serverPort = 0
    var selected: Set<String>?

    init(options: BenchCommand.Run) {
        self.options = options
        var load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        load = load.split(separator: " ").prefix(3).joined(separator: " ")
        report = BenchReport(
            date: ISO8601DateFormatter().string(from: Date()), host: ProcessInfo.processInfo.hostName,
            cores: ProcessInfo.processInfo.activeProcessorCount, loadAverageBefore: load, connections: options.connections,
            durationSeconds: options.duration, warmupSeconds: options.warmup, endpoint: options.endpoint ?? "")
        selected = options.operations.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
    }

    static var executable: String { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0] }

    func log(_ text: String) { FileHandle.standardError.write(Data("[bench] \(text)\n".utf8)) }

    // MARK: Server

    func serverEnvironment(handleCache: Int = 10_000) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("TRENT_") }
        environment["TRENT_DATA_DIR"] = dataDirectory.path
        environment["TRENT_HOST"] = host
        environment["TRENT_PORT"] = String(serverPort)
        // A free admin port of its own, so benchmark servers run side by side and the figures include the metrics' cost.
        environment["TRENT_ADMIN_PORT"] = String(ChildProcess.freePort())
        environment["TRENT_REGION"] = options.region
        environment["TRENT_ACCESS_KEY_ID"] = accessKeyID
        environment["TRENT_SECRET_ACCESS_KEY"] = secret
        environment["TRENT_LOG_LEVEL"] = "warning"
        // The benchmark measures Trent's ceilings, not AWS's quotas.
        environment["TRENT_QUOTAS_ENABLED"] = "false"
        environment["TRENT_HSM_EMBEDDED_TOKEN"] = ProcessInfo.processInfo.environment["TRENT_HSM_EMBEDDED_TOKEN"] ?? "softhsm2"
        environment["TRENT_HSM_HANDLE_CACHE"] = String(handleCache)
        if let threads = options.hsmThreads { environment["TRENT_HSM_THREADS"] = String(threads) }
        return environment
    }

    func startServer(handleCache: Int = 10_000) throws -> Double {
        let child = ChildProcess(
            name: "trent serve", executable: Self.executable, arguments: ["serve"], environment: serverEnvironment(handleCache: handleCache),
            logURL: dataDirectory.appendingPathComponent("server.log"), directory: dataDirectory)
        let seconds = try child.start(waitingFor: host, port: serverPort)
        server = child
        return seconds
    }

    /// The configuration the server runs with, for opening its token and store in this process.
    func serverConfiguration() throws -> TrentConfiguration {
        try TrentConfiguration.load(path: nil, environment: serverEnvironment())
    }

    // MARK: Run

    func run() async throws {
        let outputDirectory = URL(fileURLWithPath: options.output).appendingPathComponent(Self.stamp())
        try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        let generatorGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            try await runPhases(outputDirectory: outputDirectory, generatorGroup: generatorGroup)
        } catch {
            try? await generatorGroup.shutdownGracefully()
            throw error
        }
        try? await generatorGroup.shutdownGracefully()
    }

    func runPhases(outputDirectory: URL, generatorGroup: MultiThreadedEventLoopGroup) async throws {

        let signer: RequestSigner
        if let endpoint = options.endpoint {
            guard let url = URL(string: endpoint), let port = url.port, let endpointHost = url.host,
                let id = options.accessKeyId, let secret = options.secretAccessKey
            else {
                throw BenchError("--endpoint needs a URL with a port, --access-key-id and --secret-access-key")
            }
            serverPort = port
            signer = RequestSigner(accessKeyID: id, secret: secret, region: options.region, host: "\(endpointHost):\(port)")
            try await measureOperations(signer: signer, host: endpointHost, group: generatorGroup, ceilings: false)
        } else {
            dataDirectory = options.dataDir.map { URL(fileURLWithPath: $0) }
                ?? FileManager.default.temporaryDirectory.appendingPathComponent("trent-bench-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: dataDirectory, withIntermediateDirectories: true)
            serverPort = ChildProcess.freePort()
            signer = RequestSigner(accessKeyID: accessKeyID, secret: secret, region: options.region, host: "\(host):\(serverPort)")
            defer {
                server?.stop()
                if !options.keep && options.dataDir == nil { try? FileManager.default.removeItem(at: dataDirectory) }
            }
            log("starting trent serve on port \(serverPort), data in \(dataDirectory.path)")
            report.startupSecondsEmpty = try startServer()
            report.serverHSMThreads = try serverConfiguration().hsm.threads
            report.endpoint = "http://\(host):\(serverPort) (trent serve started by the benchmark)"
            try await measureOperations(signer: signer, host: host, group: generatorGroup, ceilings: true)
            if options.compare { try await measureMoto(group: generatorGroup) }
            let scale = options.scaleKeys.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.sorted()
            if !scale.isEmpty { try await measureScale(scale, signer: signer, group: generatorGroup) }
        }
        var load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        load = load.split(separator: " ").prefix(3).joined(separator: " ")
        report.loadAverageAfter = load
        evaluateTargets()

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: outputDirectory.appendingPathComponent("results.json"))
        let markdown = BenchMarkdown.render(report)
        try Data(markdown.utf8).write(to: outputDirectory.appendingPathComponent("results.md"))
        print(markdown)
        log("results in \(outputDirectory.path)/results.json and results.md")
    }

    static func stamp() -> String {
        var seconds = time_t(Date().timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d%02d%02d-%02d%02d%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    func wanted(_ name: String) -> Bool { selected.map { $0.contains(name) || $0.contains(name.split(separator: " ")[0].description) } ?? true }

    // MARK: Keys

    /// Creates a key over HTTP; nil (with the error type) when the server refuses that key spec.
    func createKey(_ spec: String, usage: String, signer: RequestSigner, host: String, group: any EventLoopGroup) async throws -> (String?, String?) {
        let answer = try await OneShot.send(
            "CreateKey", ["KeySpec": spec, "KeyUsage": usage, "Description": "trent bench"], signer: signer, host: host, port: serverPort, group: group)
        if answer.status == 200, let metadata = answer.json["KeyMetadata"] as? [String: Any], let id = metadata["KeyId"] as? String {
            return (id, nil)
        }
        return (nil, answer.errorType ?? "HTTP \(answer.status)")
    }

    func prepareKeys(signer: RequestSigner, host: String, group: any EventLoopGroup) async throws -> (BenchKeys, [String: String]) {
        var unsupported: [String: String] = [:]
        let (symmetric, symmetricError) = try await createKey("SYMMETRIC_DEFAULT", usage: "ENCRYPT_DECRYPT", signer: signer, host: host, group: group)
        guard let symmetric else { throw BenchError("CreateKey SYMMETRIC_DEFAULT failed: \(symmetricError ?? "")") }
        let (hmac, hmacError) = try await createKey("HMAC_256", usage: "GENERATE_VERIFY_MAC", signer: signer, host: host, group: group)
        if hmac == nil { unsupported["GenerateMac HMAC_SHA_256"] = hmacError }
        let (ecc, eccError) = try await createKey("ECC_NIST_P256", usage: "SIGN_VERIFY", signer: signer, host: host, group: group)
        if ecc == nil { unsupported["Sign ECDSA P-256"] = eccError }
        let (rsa, rsaError) = try await createKey("RSA_2048", usage: "SIGN_VERIFY", signer: signer, host: host, group: group)
        if rsa == nil { unsupported["Sign RSA-2048 PSS"] = rsaError }
        let encrypted = try await OneShot.send(
            "Encrypt", ["KeyId": symmetric, "Plaintext": Body.plaintext32], signer: signer, host: host, port: serverPort, group: group)
        guard encrypted.status == 200, let blob = encrypted.json["CiphertextBlob"] as? String else {
            throw BenchError("the first Encrypt failed: HTTP \(encrypted.status) \(String(decoding: encrypted.body, as: UTF8.self))")
        }
        return (BenchKeys(symmetric: [symmetric], hmac: hmac, ecc: ecc, rsa: rsa, ciphertext: blob), unsupported)
    }

    // MARK: Phases

    func load(
        _ name: String, labels: [String], host: String, port: Int, connections: Int, duration: Double, group: any EventLoopGroup,
        next: @escaping @Sendable () -> PreparedRequest
    ) async throws -> [OperationResult] {
        let generator = LoadGenerator(host: host, port: port, group: group)
        let result = try await generator.run(labels: labels.count, connections: connections, duration: duration, warmup: options.warmup, next: next)
        return labels.enumerated().map { index, label in
            let samples = result.samples[index]
            return OperationResult(
                name: label, connections: connections, seconds: result.seconds, requests: samples.latencies.count,
                requestsPerSecond: Double(samples.latencies.count) / result.seconds, errors: samples.errors, firstError: samples.firstError,
                latency: LatencySummary(samples.latencies))
        }
    }

    func measureOperations(signer: RequestSigner, host: String, group: any EventLoopGroup, ceilings: Bool) async throws {
        let port = serverPort
        let (keys, unsupported) = try await prepareKeys(signer: signer, host: host, group: group)
        report.serverResidentMiBAfterStart = server?.residentMiB

        if ceilings {
            log("HTTP ceiling: bare POST endpoint on the same Hummingbird setup, \(options.connections) connections")
            let ceilingPort = ChildProcess.freePort()
            let ceiling = ChildProcess(
                name: "HTTP ceiling server", executable: Self.executable,
                arguments: ["bench", "ceiling-server", "--host", host, "--port", String(ceilingPort)],
                environment: ProcessInfo.processInfo.environment, logURL: dataDirectory.appendingPathComponent("ceiling.log"))
            _ = try ceiling.start(waitingFor: host, port: ceilingPort)
            defer { ceiling.stop() }
            // The same request Trent gets (an Encrypt of 32 bytes, signed), so client-side costs are equal.
            let ceilingSigner = RequestSigner(accessKeyID: accessKeyID, secret: secret, region: options.region, host: "\(host):\(ceilingPort)")
            let body = Body.json(["KeyId": keys.symmetric[0], "Plaintext": Body.plaintext32])
            report.httpCeiling = try await load(
                "HTTP ceiling", labels: ["HTTP ceiling (bare POST)"], host: host, port: ceilingPort, connections: options.connections,
                duration: options.duration, group: group
            ) { PreparedRequest(label: 0, head: ceilingSigner.sign(operation: "Encrypt", body: body), body: body) }.first
            ceiling.stop()
        }

        for operation in BenchOperation.all where wanted(operation.name) {
            if let reason = unsupported[operation.name] {
                report.operations.append(Self.unsupportedRow(operation.name, reason))
                log("\(operation.name): not supported (\(reason))")
                continue
            }
            log("\(operation.name): \(options.connections) connections, \(options.duration) s")
            let make = operation.makeBody
            let target = operation.target
            var row = try await load(
                operation.name, labels: [operation.name], host: host, port: port, connections: options.connections,
                duration: options.duration, group: group
            ) {
                let body = make(keys)
                return PreparedRequest(label: 0, head: signer.sign(operation: target, body: body), body: body)
            }[0]
            row.hsmCeiling = operation.ceiling
            report.operations.append(row)
        }

        if ceilings, let bootstrap = try? HSMBootstrap(configuration: serverConfiguration()) {
            log("HSM ceiling: tight PKCS#11 loops on the server's token, \(options.hsmSeconds) s each with 1 and 2 threads")
            let largest = options.scaleKeys.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.max() ?? 0
            report.hsmCeiling = try bootstrap.withSetupToken(createMissing: false) { token, _ in
                try HSMCeiling(token: token, seconds: options.hsmSeconds, manyKeys: largest).measure()
            }
        }

        // The mix.
        let mixDuration = options.mixDuration ?? options.duration * 2
        let mixOperations = BenchOperation.mix.compactMap { name, weight -> (BenchOperation, Int)? in
            guard unsupported[name] == nil, let operation = BenchOperation.all.first(where: { $0.name == name }) else { return nil }
            return (operation, weight)
        }
        if !mixOperations.isEmpty && wanted("Mix") {
            log("mixed run: \(mixDuration) s")
            var table: [Int] = []
            for (index, (_, weight)) in mixOperations.enumerated() { table += Array(repeating: index, count: weight) }
            let frozen = table
            let operations = mixOperations.map(\.0)
            let rows = try await load(
                "Mix", labels: operations.map(\.name), host: host, port: port, connections: options.connections, duration: mixDuration, group: group
            ) {
                let index = frozen[Int.random(in: 0..<frozen.count)]
                let body = operations[index].makeBody(keys)
                return PreparedRequest(label: index, head: signer.sign(operation: operations[index].target, body: body), body: body)
            }
            report.mixPerOperation = rows
            let all = rows.reduce(into: (requests: 0, errors: 0)) { $0.requests += $1.requests; $0.errors += $1.errors }
            report.mix = OperationResult(
                name: "Mix (weighted)", connections: options.connections, seconds: rows.first?.seconds ?? 0, requests: all.requests,
                requestsPerSecond: Double(all.requests) / (rows.first?.seconds ?? 1), errors: all.errors,
                firstError: rows.compactMap(\.firstError).first, latency: LatencySummary([]))
        }

        if wanted("CreateKey") {
            log("CreateKey over HTTP: \(options.connections) connections, \(options.duration) s")
            report.createKey = try await load(
                "CreateKey", labels: ["CreateKey SYMMETRIC_DEFAULT"], host: host, port: port, connections: options.connections,
                duration: options.duration, group: group
            ) {
                let body = Body.json(["KeySpec": "SYMMETRIC_DEFAULT", "Description": "bench"])
                return PreparedRequest(label: 0, head: signer.sign(operation: "CreateKey", body: body), body: body)
            }.first
        }
        fillRatios()
    }

    static func unsupportedRow(_ name: String, _ reason: String) -> OperationResult {
        OperationResult(
            name: name, connections: 0, seconds: 0, requests: 0, requestsPerSecond: 0, errors: 0, firstError: nil,
            latency: LatencySummary([]), supported: false, note: "not supported: CreateKey answered \(reason)")
    }

    func fillRatios() {
        let http = report.httpCeiling?.requestsPerSecond
        let hsm = report.hsmCeiling
        func fill(_ row: inout OperationResult) {
            guard row.supported else { return }
            if let http, http > 0 { row.ratioToHTTPCeiling = row.requestsPerSecond / http }
            if let name = row.hsmCeiling, let figure = hsm[name], figure.opsPerSecond > 0 {
                row.ratioToHSMCeiling = row.requestsPerSecond / figure.opsPerSecond
            }
        }
        for index in report.operations.indices { fill(&report.operations[index]) }
        for index in report.scale.indices { fill(&report.scale[index].encrypt) }
        if var mix = report.mix {
            fill(&mix)
            report.mix = mix
        }
    }

    // MARK: moto

    func measureMoto(group: any EventLoopGroup) async throws {
        let candidates = [URL(fileURLWithPath: ".venv/bin/moto_server").path]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/moto_server" }
        guard let motoPath = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            log("--compare: moto_server not found (make bench-deps installs it into .venv); skipping")
            return
        }
        let port = ChildProcess.freePort()
        let moto = ChildProcess(
            name: "moto_server", executable: motoPath, arguments: ["-H", host, "-p", String(port)], environment: ProcessInfo.processInfo.environment,
            logURL: dataDirectory.appendingPathComponent("moto.log"))
        _ = try moto.start(waitingFor: host, port: port, timeout: 60)
        defer { moto.stop(grace: 3) }
        let signer = RequestSigner(accessKeyID: "AKIAMOTOBENCH", secret: "moto", region: options.region, host: "\(host):\(port)")
        let created = try await OneShot.send("CreateKey", ["Description": "bench"], signer: signer, host: host, port: port, group: group)
        guard let metadata = created.json["KeyMetadata"] as? [String: Any], let keyID = metadata["KeyId"] as? String else {
            throw BenchError("moto CreateKey failed: HTTP \(created.status)")
        }
        log("moto Encrypt 32 B: \(options.connections) connections, \(options.duration) s")
        var row = try await load(
            "moto", labels: ["moto Encrypt 32 B"], host: host, port: port, connections: options.connections, duration: options.duration, group: group
        ) {
            let body = Body.json(["KeyId": keyID, "Plaintext": Body.plaintext32])
            return PreparedRequest(label: 0, head: signer.sign(operation: "Encrypt", body: body), body: body)
        }[0]
        row.note = "moto \(Self.motoVersion(motoPath) ?? "") (Python, in-memory, no HSM, no audit)"
        report.moto = row
        if let trent = report.operations.first(where: { $0.name == "Encrypt 32 B" }), row.requestsPerSecond > 0 {
            report.ratioToMoto = trent.requestsPerSecond / row.requestsPerSecond
        }
    }

    static func motoVersion(_ path: String) -> String? {
        let python = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("python").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", "import moto; print(moto.__version__)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        process.waitUntilExit()
        return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: Scale

    /// Encrypt with 1, 1,000 and 100,000 keys (chosen at random per request), the server's startup time and
    /// memory at the largest count. Keys beyond the first are created in this process, straight through the
    /// provider (in the token) and the store (in batches), while the server is stopped.
    func measureScale(_ counts: [Int], signer: RequestSigner, group: any EventLoopGroup) async throws {
        guard let largest = counts.last, largest >= 1 else { return }
        server?.stop()
        server = nil
        log("scale: creating \(largest) keys through the provider and the store")
        let started = Date()
        let ids = try await bulkCreateKeys(largest)
        report.keyCreationDirectPerSecond = Double(largest) / Date().timeIntervalSince(started)
        report.scaleKeyCount = largest
        let handleCache = max(10_000, largest + largest / 10 + 16)
        report.startupSecondsAtScale = try startServer(handleCache: handleCache)
        report.serverResidentMiBAtScaleStart = server?.residentMiB
        log("scale: server restarted with \(largest) more keys in \(String(format: "%.2f", report.startupSecondsAtScale ?? 0)) s, handle cache \(handleCache)")
        let port = serverPort
        var oneKey: Double?
        for count in counts {
            let working = Array(ids.prefix(count))
            let keys = BenchKeys(symmetric: working, hmac: nil, ecc: nil, rsa: nil, ciphertext: "")
            if count > 1 {
                // Touch every key once so that the working set is in the handle cache, as the target assumes.
                log("scale: warming \(count) keys")
                let counter = Counter(working)
                _ = try await load(
                    "warm", labels: ["warm"], host: host, port: port, connections: options.connections, duration: 3600, group: group,
                    until: { counter.exhausted }
                ) {
                    let body = Body.json(["KeyId": counter.next(), "Plaintext": Body.plaintext32])
                    return PreparedRequest(label: 0, head: signer.sign(operation: "Encrypt", body: body), body: body)
                }
            }
            log("scale: Encrypt 32 B over \(count) keys, \(options.duration) s")
            var row = try await load(
                "scale", labels: ["Encrypt 32 B, \(count) keys"], host: host, port: port, connections: options.connections,
                duration: options.duration, group: group
            ) {
                let body = Body.json(["KeyId": keys.symmetricKey, "Plaintext": Body.plaintext32])
                return PreparedRequest(label: 0, head: signer.sign(operation: "Encrypt", body: body), body: body)
            }[0]
            row.hsmCeiling = count > 1 && report.hsmCeiling["gcm-encrypt-32-\(count)-keys"] != nil ? "gcm-encrypt-32-\(count)-keys" : "gcm-encrypt-32"
            if count == 1 { oneKey = row.requestsPerSecond }
            report.scale.append(ScaleResult(
                keys: count, encrypt: row, ratioToOneKey: oneKey.map { row.requestsPerSecond / $0 }, serverResidentMiB: server?.residentMiB))
        }
        report.serverResidentMiBAtScaleEnd = server?.residentMiB
        fillRatios()
    }

    final class Counter: @unchecked Sendable {
        let ids: [String]
        var index = 0
        init(_ ids: [String]) { self.ids = ids }
        var exhausted: Bool { index >= ids.count }
        func next() -> String {
            defer { index += 1 }
            return ids[index % ids.count]
        }
    }

    func load(
        _ name: String, labels: [String], host: String, port: Int, connections: Int, duration: Double, group: any EventLoopGroup,
        until: @escaping @Sendable () -> Bool, next: @escaping @Sendable () -> PreparedRequest
    ) async throws -> [OperationResult] {
        let generator = LoadGenerator(host: host, port: port, group: group)
        _ = try await generator.run(labels: labels.count, connections: connections, duration: duration, warmup: 0, stopWhen: until, next: next)
        return []
    }

    func bulkCreateKeys(_ count: Int) async throws -> [String] {
        let configuration = try serverConfiguration()
        let runtime = try await TrentRuntime.open(configuration, createMissing: false)
        do {
            let ids = try await bulkCreateKeys(
                count, runtime: runtime, account: configuration.service.accountId, region: configuration.service.region)
            await runtime.shutdown()
            return ids
        } catch {
            await runtime.shutdown()
            throw error
        }
    }

    func bulkCreateKeys(_ count: Int, runtime: TrentRuntime, account: String, region: String) async throws -> [String] {
        let policy = KeyManagementService.defaultKeyPolicy(account: account)
        var ids: [String] = []
        ids.reserveCapacity(count)
        let batch = 2_000
        var made = 0
        while made < count {
            let size = min(batch, count - made)
            let records = try await withThrowingTaskGroup(of: [(KeyRecord, BackingKeyRecord)].self) { tasks in
                let workers = 4
                for worker in 0..<workers {
                    let share = size / workers + (worker < size % workers ? 1 : 0)
                    tasks.addTask {
                        var made: [(KeyRecord, BackingKeyRecord)] = []
                        for _ in 0..<share {
                            let now = Date()
                            let key = KeyRecord(
                                id: KeyID(), accountID: account, region: region, creationDate: now, description: "trent bench scale", keySpec: .symmetricDefault,
                                keyUsage: .encryptDecrypt, origin: .awsKMS, keyManager: .customer, state: .enabled, policy: policy, currentVersion: 1)
                            let material = try await runtime.provider.createBackingKey(for: key.id, version: 1, kind: .aes256)
                            made.append((key, BackingKeyRecord(
                                keyID: key.id, version: 1, wrappedKey: material.wrappedKey, binding: material.binding,
                                wrappingKeyLabel: material.wrappingKeyLabel, creationDate: now)))
                        }
                        return made
                    }
                }
                var all: [(KeyRecord, BackingKeyRecord)] = []
                for try await part in tasks { all += part }
                return all
            }
            try await runtime.store.insertKeys(records)
            ids += records.map { $0.0.id.description }
            made += size
        }
        return ids
    }

    // MARK: Targets

    func evaluateTargets() {
        var targets: [BenchReport.Target] = []
        if let encrypt = report.operations.first(where: { $0.name == "Encrypt 32 B" }), let http = report.httpCeiling, http.requestsPerSecond > 0 {
            let ratio = encrypt.requestsPerSecond / http.requestsPerSecond
            targets.append(.init(
                target: "Encrypt 32 B >= 60% of the HTTP ceiling at \(encrypt.connections) connections",
                measured: String(format: "%.0f / %.0f req/s = %.0f%%", encrypt.requestsPerSecond, http.requestsPerSecond, ratio * 100), met: ratio >= 0.6))
            targets.append(.init(
                target: "Encrypt 32 B p99 <= 5 ms", measured: String(format: "p99 %.2f ms", encrypt.latency.p99Ms), met: encrypt.latency.p99Ms <= 5))
        }
        if let ratio = report.ratioToMoto {
            targets.append(.init(target: "Encrypt >= 50 x moto", measured: String(format: "%.0f x", ratio), met: ratio >= 50))
        }
        if let largest = report.scale.last, largest.keys > 1, let ratio = largest.ratioToOneKey {
            targets.append(.init(
                target: "Encrypt with \(largest.keys) keys >= 80% of Encrypt with 1 key", measured: String(format: "%.0f%%", ratio * 100), met: ratio >= 0.8))
        }
        if let mix = report.mix {
            targets.append(.init(
                target: "no request of the mixed run fails", measured: "\(mix.errors) errors in \(mix.requests + mix.errors) requests over \(String(format: "%.1f", mix.seconds)) s",
                met: mix.errors == 0))
        }
        report.targets = targets
    }
}
