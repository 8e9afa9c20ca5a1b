import Foundation
@testable import KMS
@testable import KMSAudit
@testable import KMSHSM

/// `trent audit verify`: AuditVerifier over a trail directory (line splitting, line parsing, the record
/// sequence and hash chain, the digest chain and coverage) with a stand-in for the token's signature check.
///
/// Input: records.jsonl, a 0x00 byte, digests.jsonl, a 0x00 byte, chain-key.json (a part and its 0x00 absent:
/// no such file).
///
/// Properties: no trap; verification reports damage, it does not throw (the stand-in signer never fails); it
/// counts every line; a trail it calls intact has every record line in sequence and no torn line.
enum AuditTarget {
    static let target = FuzzTarget(name: "audit", maximumLength: 16384, summary: "AuditVerifier: record lines, hash chain, digest chain (signatures by a stand-in)") { bytes in
        run(bytes)
    }

    /// One directory per process for the two files, on tmpfs where there is one.
    static let directory: URL = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
        let url = base.appendingPathComponent("trent-fuzz-audit-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: AuditTarget.directory) }
        return url
    }()

    static func run(_ bytes: [UInt8]) {
        let parts = bytes.pieces(separator: 0)
        let records = parts[0]
        let digests = parts.count > 1 ? parts[1] : nil
        let chainKey = parts.count > 2 ? parts[2...].joined(separator: [0]).map { $0 } : nil
        for (name, content) in [(AuditFormat.recordsFileName, Optional(records)), (AuditFormat.digestsFileName, digests), (AuditFormat.chainKeyFileName, chainKey)] {
            let url = directory.appendingPathComponent(name)
            do {
                // Reading an empty file leaks in the toolchain's Foundation (Tests/Fuzz/lsan.supp), which would make
                // every such input a leak check: an empty records or digests file is left out (no lines either way), an
                // empty chain key file is written as a lone newline (not a chain key file either way).
                if var content, !content.isEmpty || name == AuditFormat.chainKeyFileName {
                    if content.isEmpty { content = [AuditFormat.newline] }
                    try Data(content).write(to: url)
                } else if FileManager.default.fileExists(atPath: url.path) {
                    try FileManager.default.removeItem(at: url)
                }
            } catch {
                fatalError("cannot write the trail under \(directory.path): \(error)")
            }
        }

        let outcome: Result<AuditVerificationReport, any Error> = runBlocking {
            do {
                return .success(try await AuditVerifier.verify(directory: directory, signer: StandInSigner()))
            } catch {
                return .failure(error)
            }
        }
        let report: AuditVerificationReport
        switch outcome {
        case .success(let value): report = value
        case .failure(let error):
            check(false, "verification threw instead of reporting: \(error)")
            return
        }
        let recordLines = AuditFormat.lines(of: records)
        check(report.recordCount == recordLines.lines.count, "\(report.recordCount) records counted, \(recordLines.lines.count) lines")
        check(report.digestCount == (digests.map { AuditFormat.lines(of: $0).lines.count } ?? 0), "digest lines miscounted")
        check(report.isIntact == report.problems.isEmpty, "isIntact")
        if report.isIntact {
            check(recordLines.torn == nil, "a torn last line went unreported")
            for (index, line) in recordLines.lines.enumerated() {
                guard let parsed = AuditFormat.parse(line) else {
                    check(false, "line \(index + 1) is not JSON yet the trail is intact")
                    return
                }
                check(AuditFormat.integer(parsed["sequence"]) == index + 1, "an intact trail with line \(index + 1) out of sequence")
            }
        }
    }
}

/// The token's part, without a token: digests are "signed" with SHA-256 of a fixed prefix and the message, and
/// the chain key is "sealed" as a fixed prefix and the key. Seeds written with it verify completely, so the
/// fuzzer reaches everything after the signature and key checks too.
struct StandInSigner: AuditDigestSigner {
    static let prefix = Array("trent-fuzz-stand-in-signer".utf8)
    static let sealPrefix = Array("stand-in-sealed:".utf8)

    func sign(_ digest: [UInt8]) async throws -> [UInt8] { AsymmetricEncoding.hash(Self.prefix + digest, .sha256) }

    func verify(_ digest: [UInt8], signature: [UInt8]) async throws -> Bool {
        signature == AsymmetricEncoding.hash(Self.prefix + digest, .sha256)
    }

    func sealChainKey(_ key: [UInt8]) async throws -> [UInt8] { Self.sealPrefix + key }

    func unsealChainKey(_ sealed: [UInt8]) async throws -> [UInt8]? {
        sealed.starts(with: Self.sealPrefix) ? Array(sealed.dropFirst(Self.sealPrefix.count)) : nil
    }
}
