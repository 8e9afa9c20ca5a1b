// # Trent's fuzz targets
//
// Coverage-guided fuzzing with libFuzzer of every parser of untrusted bytes, in one executable (`TrentFuzz`)
// that holds all the targets and picks one by name, so there is one sanitizer build and one link.
//
// | target               | what it reads                                                          | -max_len |
// |----------------------|------------------------------------------------------------------------|----------|
// | `json`               | JSONParser, JSONValue (canonical round trip), AWSJSON.parseBody        | 4096     |
// | `operations`         | every operation's input decoding (AWSJSON.decode, JSONValueCoding)     | 4096     |
// | `sigv4`              | SigV4 Authorization header, canonical request, scope/date, forwarding  | 2048     |
// | `ciphertext`         | CiphertextBlob, host-side RSA OAEP decoding, DER ECDSA signatures      | 2048     |
// | `der`                | SubjectPublicKeyInfo, EC points, ECDH peer keys, PKCS#8 written back   | 2048     |
// | `policy`             | PolicyDocument parsing and evaluation, condition operators, globs      | 4096     |
// | `encryption-context` | EncryptionContext encoding and bounds, grant constraints, grant tokens | 2048     |
// | `cloudtrail`         | CloudTrailRecord from arbitrary request bodies, its audit line         | 4096     |
// | `import-token`       | ImportToken content, host-side OAEP of wrapped key material            | 4096     |
// | `audit`              | AuditVerifier (`trent audit verify`) with a stand-in digest signer     | 16384    |
//
// Each target's doc comment gives its input format and the properties it checks beyond "no trap, no hang, no
// unbounded allocation": round trips, agreement with a reference, bounds. A violated property is a crash.
//
// Two builds of the same sources:
//
// - the normal debug build (`swift build --build-tests`) makes a corpus replayer: `TrentFuzz` runs every
//   target over its committed corpus in Tests/Fuzz/corpus/<target>/ (what `make fuzz-smoke` runs first);
//   `TrentFuzz <target> <file or directory>...` runs one target over the inputs given (a crash to reproduce,
//   without a sanitizer); `TrentFuzz --list` lists the targets and their -max_len.
// - the fuzzer build, `make fuzz-build`: release, `-sanitize=fuzzer,address`, `-enable-testing` (the targets
//   use `@testable import`), `-assert-config Debug` (assertions on), `-DTRENT_FUZZING`, in .build-fuzz. Then
//   `TrentFuzz <target> [libFuzzer flags] [corpus directories]` is libFuzzer's driver for that target
//   (or set TRENT_FUZZ_TARGET). `make fuzz` runs every target for FUZZ_SECONDS; see docs/reliability.md.
//
// Corpus entries are small hand-made or generated valid and edge inputs; Tests/Fuzz/dict/<target>.dict are
// libFuzzer dictionaries (member names, enum values and operators from the botocore model of KMS), made by
// Tests/Fuzz/tools/make_dictionaries.py. `TrentFuzz --generate-seeds <directory>` writes the generated seeds
// (an audit trail signed by the stand-in signer, import tokens).

import Foundation

enum Targets {
    static let all: [FuzzTarget] = [
        JSONTargets.json, JSONTargets.operations, SigV4Target.target, CiphertextTarget.target, DERTarget.target, PolicyTarget.target,
        EncryptionContextTarget.target, CloudTrailTarget.target, ImportTarget.target, AuditTarget.target,
    ]

    static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    static func list() -> String {
        all.map { "\($0.name) \($0.maximumLength) \($0.summary)" }.joined(separator: "\n")
    }
}

#if TRENT_FUZZING

/// The target this process fuzzes, chosen before libFuzzer starts and never changed after.
nonisolated(unsafe) private var selected: FuzzTarget?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    selected!.run(bytes)
    return 0
}

/// libFuzzer's driver (compiler-rt's libclang_rt.fuzzer, linked by -sanitize=fuzzer).
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// SwiftPM links an executable's `main` to `<module>_main` (so tests can link the module); libFuzzer's own
/// `main` is not used: this one picks the target, then hands the remaining arguments to libFuzzer.
@_cdecl("TrentFuzz_main")
func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var arguments = (0..<Int(argc)).map { argv?[$0] }
    let first = arguments.count > 1 ? arguments[1].map { String(cString: $0) } : nil
    if first == "--list" {
        print(Targets.list())
        return 0
    }
    var name = ProcessInfo.processInfo.environment["TRENT_FUZZ_TARGET"]
    if let first, !first.hasPrefix("-"), Targets.named(first) != nil {
        name = first
        arguments.remove(at: 1)
    }
    guard let name, let target = Targets.named(name) else {
        FileHandle.standardError.write(Data("usage: TrentFuzz <target> [libFuzzer flags] [corpus...]  (or TRENT_FUZZ_TARGET=<target>)\ntargets:\n\(Targets.list())\n".utf8))
        return 2
    }
    selected = target
    var count = CInt(arguments.count)
    arguments.append(nil)
    return arguments.withUnsafeMutableBufferPointer { buffer in
        var pointer = buffer.baseAddress
        return LLVMFuzzerRunDriver(&count, &pointer, fuzzerTestOneInput)
    }
}

#else

/// The corpus replayer (normal builds): every target over its committed corpus, or one target over given inputs.
@main
struct Replayer {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        var corpusRoot = defaultCorpusRoot()
        if let index = arguments.firstIndex(of: "--corpus"), index + 1 < arguments.count {
            corpusRoot = URL(fileURLWithPath: arguments[index + 1])
            arguments.removeSubrange(index...(index + 1))
        }
        switch arguments.first {
        case "--list":
            print(Targets.list())
        case "--generate-seeds":
            guard arguments.count == 2 else { usage() }
            SeedGenerator.write(into: URL(fileURLWithPath: arguments[1]))
        case "--help", "-h":
            usage()
        case let name?:
            guard let target = Targets.named(name) else { usage() }
            let paths = arguments.dropFirst().map { URL(fileURLWithPath: $0) }
            replay(target, paths.isEmpty ? [corpusRoot.appendingPathComponent(target.name)] : paths, verbose: !paths.isEmpty)
        case nil:
            JSONTargets.checkOperationTable()
            let start = Date()
            var total = 0
            for target in Targets.all { total += replay(target, [corpusRoot.appendingPathComponent(target.name)], verbose: false) }
            print(String(format: "replayed %d corpus inputs over %d targets in %.2f s: no property violated", total, Targets.all.count, Date().timeIntervalSince(start)))
        }
    }

    static func usage() -> Never {
        print(
            """
            usage: TrentFuzz [--corpus <directory>]                replay every target over its corpus
                   TrentFuzz <target> [<file or directory>...]     replay one target (its corpus by default)
                   TrentFuzz --list                                the targets and their -max_len
                   TrentFuzz --generate-seeds <directory>          write the generated seed inputs
            targets:
            \(Targets.list())
            """)
        exit(2)
    }

    /// Tests/Fuzz/corpus from the working directory (the package root), else next to these sources.
    static func defaultCorpusRoot() -> URL {
        let relative = URL(fileURLWithPath: "Tests/Fuzz/corpus")
        if FileManager.default.fileExists(atPath: relative.path) { return relative }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("corpus")
    }

    @discardableResult
    static func replay(_ target: FuzzTarget, _ locations: [URL], verbose: Bool) -> Int {
        var files: [URL] = []
        for location in locations {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: location.path, isDirectory: &isDirectory) else {
                print("\(target.name): no such file or directory: \(location.path)")
                exit(1)
            }
            if isDirectory.boolValue {
                let entries = (try? FileManager.default.contentsOfDirectory(at: location, includingPropertiesForKeys: nil)) ?? []
                files += entries.filter { !$0.lastPathComponent.hasPrefix(".") }.sorted { $0.path < $1.path }
            } else {
                files.append(location)
            }
        }
        let start = Date()
        var slowest = (seconds: 0.0, file: "")
        for file in files {
            guard let data = FileManager.default.contents(atPath: file.path) else { continue }
            if verbose { print("\(target.name): running \(file.path) (\(data.count) bytes)") }
            let began = Date()
            target.run(Array(data))
            let seconds = Date().timeIntervalSince(began)
            if seconds > slowest.seconds { slowest = (seconds, file.lastPathComponent) }
        }
        print(String(format: "%@: %d inputs in %.2f s (slowest %.3f s: %@)", target.name, files.count, Date().timeIntervalSince(start), slowest.seconds, slowest.file))
        return files.count
    }
}

#endif
