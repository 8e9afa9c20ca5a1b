import ArgumentParser
import Foundation
import KMSAudit

/// `trent audit verify`: checks the audit trail's hash chain and the token-signed digests, so a deleted,
/// altered or reordered record is found.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Inspect the audit trail.", subcommands: [Verify.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify the hash chain and the signed digests of the audit trail. Exits 1 when it was tampered with.")
        @OptionGroup var options: ConfigOption

        struct Output: Encodable {
            var Records: Int
            var Digests: Int
            var Intact: Bool
            var Problems: [String]
        }

        func run() async throws {
            var intact = true
            try await Trent.runReportingFailures {
                let configuration = try options.load()
                let runtime = try await TrentRuntime.open(configuration, createMissing: false)
                let report: AuditVerificationReport
                do {
                    report = try await AuditVerifier.verify(
                        directory: configuration.auditDirectoryURL, signer: TokenDigestSigner(provider: runtime.provider))
                } catch {
                    await runtime.shutdown()
                    throw error
                }
                await runtime.shutdown()
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let output = Output(Records: report.recordCount, Digests: report.digestCount, Intact: report.isIntact, Problems: report.problems)
                FileHandle.standardOutput.write(try encoder.encode(output) + Data("\n".utf8))
                intact = report.isIntact
            }
            if !intact { throw ExitCode.failure }
        }
    }
}

extension TrentConfiguration.Audit {
    /// audit.rotateBytes and audit.rotateSeconds, 0 meaning never.
    var rotation: AuditRotation {
        AuditRotation(
            maximumBytes: rotateBytes > 0 ? UInt64(rotateBytes) : nil, maximumAge: rotateSeconds > 0 ? Double(rotateSeconds) : nil)
    }
}
