import Crypto
import Foundation
import KMS
@testable import KMSAudit
import KMSHSM
import Logging
import Synchronization
import Testing
import TrentTestSupport
import JSON

/// The audit trail on SoftHSM: the chain and digests it writes, group commit, restarts, and tampering the
/// verifier must catch, done by editing the files the trail wrote.
@Suite struct AuditTrailTests {
    let signer: TokenDigestSigner
    let root: URL
    let logger = Logger(label: "trent.tests.audit")

    init() throws {
        signer = TokenDigestSigner(provider: try TestHSM.shared().makeProvider())
        root = FileManager.default.temporaryDirectory.appendingPathComponent("trent-audit-\(UUID().uuidString)")
    }

    var directory: URL { root.appendingPathComponent("trail") }
    var recordsURL: URL { directory.appendingPathComponent("records.jsonl") }
    var digestsURL: URL { directory.appendingPathComponent("digests.jsonl") }
    var keyURL: URL { directory.appendingPathComponent("chain-key.json") }

    func openTrail(recordsPerDigest: Int = 1_000, rotation: AuditRotation = .never, logger: Logger? = nil) async throws -> AuditTrail {
        try await AuditTrail(
            directory: directory, signer: signer, recordsPerDigest: recordsPerDigest, rotation: rotation, logger: logger ?? self.logger)
    }

    /// A CloudTrail-like record with every kind of JSON value, so round trips through the file are exercised.
    static func record(_ n: Int) -> JSONValue {
        [
            "eventVersion": "1.08", "eventSource": "kms.amazonaws.com", "eventName": "Encrypt",
            "requestParameters": ["keyId": .string("alias/test-\(n)"), "encryptionContext": ["purpose": "tests/é✓"]],
            "n": .number(Double(n)), "zero": .number(0), "one": .number(1), "fraction": .number(1.5),
            "readOnly": false, "errorCode": nil, "resources": [["type": "AWS::KMS::Key"], "x"],
        ]
    }

    /// Writes `count` records one after the other, then closes (a final digest).
    func writeTrail(_ count: Int) async throws {
        let trail = try await openTrail()
        for n in 1...count { try await trail.append(Self.record(n)) }
        try await trail.close()
    }

    func verify() async throws -> AuditVerificationReport {
        try await AuditVerifier.verify(directory: directory, signer: signer)
    }

    static func lines(_ url: URL) throws -> [[UInt8]] {
        var lines = Array(try Data(contentsOf: url)).split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        #expect(lines.last == [])
        lines.removeLast()
        return lines
    }

    /// Rewrites a file line by line, as someone editing the trail would.
    func edit(_ url: URL, _ change: (inout [[UInt8]]) throws -> Void) throws {
        var lines = try Self.lines(url)
        try change(&lines)
        try Data(lines.flatMap { $0 + [0x0A] }).write(to: url)
    }

    static func object(_ line: [UInt8]) throws -> [String: JSONValue] {
        guard case .object(let object) = try JSONValue.parse(Array(line)) else {
            throw AuditTrailError("not an object")
        }
        return object
    }

    static func objectValue(_ value: JSONValue) throws -> [String: JSONValue] {
        guard case .object(let object) = value else { throw AuditTrailError("not an object") }
        return object
    }

    static func sequences(_ url: URL) throws -> [Int] {
        try lines(url).map { line in
            guard case .number(let sequence)? = try object(line)["sequence"] else { throw AuditTrailError("no sequence") }
            return Int(sequence)
        }
    }

    func expectProblem(_ report: AuditVerificationReport, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!report.isIntact, sourceLocation: sourceLocation)
        #expect(
            report.problems.contains { $0.contains(fragment) }, "no problem mentions '\(fragment)': \(report.problems)",
            sourceLocation: sourceLocation)
    }

    // MARK: The format

    @Test func anIntactTrailVerifiesAndFollowsTheFormat() async throws {
        try await writeTrail(5)
        let report = try await verify()
        #expect(report.isIntact, "\(report.problems)")
        #expect(report.recordCount == 5)
        #expect(report.digestCount == 1)

        let keyFile = try #require(AuditFormat.ChainKeyFile(parsing: Array(try Data(contentsOf: keyURL))))
        #expect(keyFile.firstSequence == 1)
        let key = SymmetricKey(data: try #require(try await signer.unsealChainKey(keyFile.sealedKey)))
        var previous = String(repeating: "0", count: 64)
        for (index, line) in try Self.lines(recordsURL).enumerated() {
            let object = try Self.object(line)
            #expect(JSONValue.object(object).canonicalBytes == line, "lines are canonical JSON")
            #expect(object["sequence"] == .number(Double(index + 1)))
            #expect(object["previousHash"] == .string(previous))
            #expect(object["record"] == Self.record(index + 1))
            let record = try #require(object["record"])
            let hash = AuditFormat.chainHash(previousHash: previous, recordBytes: record.canonicalBytes, key: key)
            #expect(object["hash"] == .string(hash))
            previous = hash
        }
        #expect(try String(decoding: Self.lines(recordsURL)[0], as: UTF8.self).hasPrefix(#"{"hash":""#))
        #expect(try String(decoding: Self.lines(recordsURL)[0], as: UTF8.self).hasSuffix(#","sequence":1}"#))

        var digest = try Self.object(try #require(Self.lines(digestsURL).first))
        #expect(AuditFormat.integer(digest["firstSequence"]) == 1)
        #expect(AuditFormat.integer(digest["lastSequence"]) == 5)
        #expect(AuditFormat.integer(digest["chainKeyFrom"]) == 1)
        #expect(digest["lastHash"] == .string(previous))
        #expect(digest["previousDigestHash"] == .string(String(repeating: "0", count: 64)))
        #expect(try Date(AuditFormat.string(digest["digestTime"]) ?? "", strategy: .iso8601) <= Date())
        let signature = try #require(Data(base64Encoded: AuditFormat.string(digest.removeValue(forKey: "signature")) ?? ""))
        #expect(signature.count == 12 + 48)
        #expect(try await signer.verify(JSONValue.object(digest).canonicalBytes, signature: Array(signature)))

        let attributes = try FileManager.default.attributesOfItem(atPath: directory.path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o700)
        let fileAttributes = try FileManager.default.attributesOfItem(atPath: recordsURL.path)
        #expect((fileAttributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    }

    @Test func theSignerRejectsOtherMessagesAndAlteredSignatures() async throws {
        let message = Array("digest".utf8)
        let signature = try await signer.sign(message)
        #expect(try await signer.verify(message, signature: signature))
        #expect(try await !signer.verify(Array("other".utf8), signature: signature))
        var altered = signature
        altered[20] ^= 1
        #expect(try await !signer.verify(message, signature: altered))
        #expect(try await !signer.verify(message, signature: []))
        #expect(try await !signer.verify(message, signature: Array(signature.dropLast())))
    }

    // MARK: Tampering

    @Test func aDeletedRecordIsDetected() async throws {
        try await writeTrail(5)
        try edit(recordsURL) { $0.remove(at: 2) }
        let report = try await verify()
        expectProblem(report, "records.jsonl line 3 (sequence 4): sequence 4 where 3 was expected")
        expectProblem(report, "hash chain broken")
    }

    @Test func anAlteredRecordIsDetected() async throws {
        try await writeTrail(5)
        try edit(recordsURL) { lines in
            var object = try Self.object(lines[1])
            guard case .object(var record)? = object["record"] else { throw AuditTrailError("no record") }
            record["eventName"] = "Decrypt"
            object["record"] = .object(record)
            lines[1] = JSONValue.object(object).canonicalBytes
        }
        let report = try await verify()
        expectProblem(report, "records.jsonl line 2 (sequence 2): hash does not match the record (record altered")
        #expect(report.problems.count == 1, "\(report.problems)")
    }

    @Test func swappedRecordsAreDetected() async throws {
        try await writeTrail(5)
        try edit(recordsURL) { $0.swapAt(1, 2) }
        let report = try await verify()
        expectProblem(report, "records.jsonl line 2 (sequence 3): sequence 3 where 2 was expected")
        expectProblem(report, "out of order")
        expectProblem(report, "hash chain broken")
    }

    @Test func recordsDeletedFromTheEndAfterTheLastDigestAreDetected() async throws {
        try await writeTrail(5)
        try edit(recordsURL) { $0.removeLast(2) }
        let report = try await verify()
        expectProblem(report, "covers records through sequence 5 but records.jsonl ends at sequence 3")
    }

    /// The attack a plain hash chain cannot see: delete the trailing digests, then rewrite the records after the last
    /// remaining digest and recompute the chain. Without the token's chain key the recomputed hashes are wrong.
    @Test func recordsRewrittenAfterTheLastDigestWithARecomputedChainAreDetected() async throws {
        let trail = try await openTrail()
        for n in 1...6 {
            try await trail.append(Self.record(n))
            if n == 3 { try await trail.writeDigest() }
        }
        try await trail.close()
        #expect(try Self.lines(digestsURL).count == 2)
        try edit(digestsURL) { $0.removeLast() }
        try edit(recordsURL) { lines in
            var previous = AuditFormat.string(try Self.object(lines[2])["hash"]) ?? ""
            for index in 3..<lines.count {
                var line = try Self.object(lines[index])
                var record = Self.record(100 + index)
                record = JSONValue.object((try Self.objectValue(record)).merging(["eventName": "Decrypt"]) { _, new in new })
                let hash = AuditFormat.chainHash(previousHash: previous, recordBytes: record.canonicalBytes, key: nil)
                line["record"] = record
                line["previousHash"] = .string(previous)
                line["hash"] = .string(hash)
                lines[index] = JSONValue.object(line).canonicalBytes
                previous = hash
            }
        }
        let report = try await verify()
        expectProblem(report, "records.jsonl line 4 (sequence 4): hash does not match the record")
        #expect(report.problems.count == 3, "\(report.problems)")
    }

    @Test func aDeletedOrReplacedChainKeyIsDetected() async throws {
        try await writeTrail(4)
        let original = try Data(contentsOf: keyURL)
        try FileManager.default.removeItem(at: keyURL)
        expectProblem(try await verify(), "digests.jsonl line 1 (sequences 1...4): signed with a chain key, but chain-key.json is missing")

        // A key sealed by someone without the token does not unseal.
        var forged = try #require(AuditFormat.ChainKeyFile(parsing: Array(original)))
        forged.sealedKey = (0..<60).map { _ in UInt8.random(in: 0...255) }
        try Data(forged.bytes).write(to: keyURL)
        expectProblem(try await verify(), "chain-key.json: the key does not unseal with this token")
        await #expect(throws: AuditTrailError.self) { _ = try await openTrail() }

        try original.write(to: keyURL)
        #expect(try await verify().isIntact)
    }

    @Test func anAlteredDigestIsDetected() async throws {
        try await writeTrail(5)
        try edit(digestsURL) { lines in
            var digest = try Self.object(lines[0])
            digest["digestTime"] = "2001-01-01T00:00:00Z"
            lines[0] = JSONValue.object(digest).canonicalBytes
        }
        let report = try await verify()
        expectProblem(report, "digests.jsonl line 1 (sequences 1...5): signature does not verify")
        #expect(report.problems.count == 1, "\(report.problems)")
    }

    @Test func aForgedDigestSignatureIsDetected() async throws {
        try await writeTrail(3)
        // Drop the last record and forge a digest for the shorter trail: the chain matches, the signature cannot.
        try edit(recordsURL) { $0.removeLast() }
        try edit(digestsURL) { lines in
            var digest = try Self.object(lines[0])
            let records = try Self.lines(recordsURL)
            digest["lastSequence"] = .number(2)
            digest["lastHash"] = try Self.object(records[1])["hash"]
            digest["signature"] = .string(Data((0..<60).map { _ in UInt8.random(in: 0...255) }).base64EncodedString())
            lines[0] = JSONValue.object(digest).canonicalBytes
        }
        let report = try await verify()
        expectProblem(report, "digests.jsonl line 1 (sequences 1...2): signature does not verify (digest altered or forged)")
        #expect(report.problems.count == 1, "\(report.problems)")

        try edit(digestsURL) { lines in
            var digest = try Self.object(lines[0])
            digest["signature"] = "not base64!"
            lines[0] = JSONValue.object(digest).canonicalBytes
        }
        expectProblem(try await verify(), "signature does not verify")
    }

    @Test func aDeletedDigestIsDetected() async throws {
        let trail = try await openTrail()
        for n in 1...6 {
            try await trail.append(Self.record(n))
            if n % 2 == 0 { try await trail.writeDigest() }
        }
        try await trail.writeDigest()  // nothing new: no digest
        try await trail.close()  // nothing new: no digest
        #expect(try Self.lines(digestsURL).count == 3)
        #expect(try await verify().isIntact)

        try edit(digestsURL) { $0.remove(at: 1) }
        let report = try await verify()
        expectProblem(report, "digests.jsonl line 2 (sequences 5...6): previousDigestHash does not match")
        expectProblem(report, "firstSequence 5 where 3 was expected")
    }

    @Test func aTornLastLineIsReportedAndCutOffOnReopening() async throws {
        try await writeTrail(3)
        let handle = try FileHandle(forWritingTo: recordsURL)
        try handle.seekToEnd()
        try handle.write(contentsOf: Array(#"{"hash":"ab"#.utf8))
        try handle.close()
        expectProblem(try await verify(), "records.jsonl line 4: incomplete last line")

        let trail = try await openTrail()
        try await trail.append(Self.record(4))
        try await trail.close()
        let report = try await verify()
        #expect(report.isIntact, "\(report.problems)")
        #expect(try Self.sequences(recordsURL) == [1, 2, 3, 4])
    }

    // MARK: Restarts, group commit, failures

    @Test func aTrailContinuesIntactAcrossARestart() async throws {
        let first = try await openTrail()
        for n in 1...3 { try await first.append(Self.record(n)) }
        try await first.close()
        let second = try await openTrail()
        for n in 4...7 { try await second.append(Self.record(n)) }
        try await second.close()

        let report = try await verify()
        #expect(report.isIntact, "\(report.problems)")
        #expect(report.recordCount == 7)
        #expect(report.digestCount == 2)
        #expect(try Self.sequences(recordsURL) == Array(1...7))
        let digests = try Self.lines(digestsURL).map(Self.object)
        #expect(digests.map { AuditFormat.integer($0["firstSequence"]) } == [1, 4])
        #expect(digests.map { AuditFormat.integer($0["lastSequence"]) } == [3, 7])
    }

    @Test func openingATrailCutShortIsRefused() async throws {
        try await writeTrail(4)
        try edit(recordsURL) { $0.removeLast() }
        await #expect(throws: AuditTrailError.self) { _ = try await openTrail() }
    }

    @Test func concurrentAppendsAreGroupCommitted() async throws {
        let trail = try await openTrail()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<200 {
                group.addTask { try await trail.append(["n": .number(Double(n))]) }
            }
            try await group.waitForAll()
        }
        let batches = await trail.batchesWritten
        try await trail.close()

        #expect(try Self.sequences(recordsURL) == Array(1...200))
        let values = try Self.lines(recordsURL).map { try AuditFormat.integer(Self.object($0)["record"]?["n"]) }
        #expect(values.count == 200)
        #expect(Set(values) == Set((0..<200).map { Optional($0) }))
        #expect(batches >= 1)
        #expect(batches < 200, "one fsync per batch, not per record (\(batches) batches)")
        let report = try await verify()
        #expect(report.isIntact, "\(report.problems)")
        #expect(report.recordCount == 200)
    }

    @Test func digestsAreWrittenEveryRecordsPerDigestRecords() async throws {
        let trail = try await openTrail(recordsPerDigest: 10)
        for n in 1...25 { try await trail.append(Self.record(n)) }
        // The automatic digests run in the background; close waits for them and writes the last one.
        try await trail.close()
        let report = try await verify()
        #expect(report.isIntact, "\(report.problems)")
        #expect(report.digestCount >= 2)
        let digests = try Self.lines(digestsURL).map(Self.object)
        #expect(AuditFormat.integer(digests.last?["lastSequence"]) == 25)
        #expect(try #require(AuditFormat.integer(digests.first?["lastSequence"])) >= 10)
    }

    @Test func aFailedWriteFailsEveryAppendInItsBatchAndTheChainCarriesOn() async throws {
        let trail = try await openTrail()
        for n in 1...2 { try await trail.append(Self.record(n)) }
        try await trail.injectRecordWriteFailures(true)
        let failures = await withTaskGroup(of: Bool.self) { group in
            for n in 0..<5 {
                group.addTask {
                    do {
                        try await trail.append(Self.record(100 + n))
                        return false
                    } catch let error as KMSError {
                        return error.code == .internalFailure
                    } catch {
                        return false
                    }
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(failures == 5)
        try await trail.injectRecordWriteFailures(false)
        for n in 3...4 { try await trail.append(Self.record(n)) }
        try await trail.close()

        #expect(try Self.sequences(recordsURL) == [1, 2, 3, 4])
        let report = try await verify()
        #expect(report.isIntact, "\(report.problems)")
    }

    @Test func appendsAfterCloseFail() async throws {
        let trail = try await openTrail()
        try await trail.append(Self.record(1))
        try await trail.close()
        try await trail.close()
        await #expect(throws: KMSError.self) { try await trail.append(Self.record(2)) }
        #expect(try Self.lines(digestsURL).count == 1)
    }

    @Test func logsCarryCountsAndSequencesNeverRecordContents() async throws {
        let collected = CollectedLogs()
        var logger = Logger(label: "trent.tests.audit") { _ in collected }
        logger.logLevel = .trace
        let trail = try await openTrail(recordsPerDigest: 2, logger: logger)
        let marker = "secret-marker-\(UUID().uuidString)"
        for _ in 1...3 { try await trail.append(["eventName": "Encrypt", "requestParameters": ["keyId": .string(marker)]]) }
        try await trail.close()
        let text = collected.text
        #expect(text.contains("Audit records committed"))
        #expect(text.contains("Audit digest written"))
        #expect(!text.contains(marker))
        #expect(!text.contains("Encrypt"))
    }

    // MARK: Rotation

    /// The rotated files' names, oldest first.
    func rotatedFiles() throws -> [String] { try AuditFormat.rotatedRecordFiles(in: directory).map(\.name) }

    /// Writes `count` records one at a time into a trail that rotates past `maximumBytes`, then closes.
    func writeRotatingTrail(_ count: Int, maximumBytes: UInt64 = 800) async throws -> Int {
        let trail = try await openTrail(rotation: AuditRotation(maximumBytes: maximumBytes, maximumAge: nil))
        for n in 1...count { try await trail.append(Self.record(n)) }
        let rotations = await trail.rotations
        try await trail.close()
        return rotations
    }

    @Test func aRotatedTrailChainsAcrossFilesAndVerifies() async throws {
        let rotations = try await writeRotatingTrail(12)
        let files = try rotatedFiles()
        #expect(rotations >= 3)
        #expect(files.count == rotations)
        var sequences: [Int] = []
        var previousHash = AuditFormat.zeroHash
        for name in files + ["records.jsonl"] {
            let lines = try Self.lines(directory.appendingPathComponent(name)).map(Self.object)
            if let stated = AuditFormat.rotatedFirstSequence(fileName: name) {
                #expect(AuditFormat.integer(lines.first?["sequence"]) == stated, "\(name) is named after its first record")
                let attributes = try FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent(name).path)
                #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
            }
            // The first record of each file chains to the last record of the file before.
            #expect(lines.first?["previousHash"] == .string(previousHash), "\(name)")
            previousHash = AuditFormat.string(lines.last?["hash"]) ?? ""
            sequences += lines.compactMap { AuditFormat.integer($0["sequence"]) }
        }
        #expect(sequences == Array(1...12))
        // A digest is written before each rotation, so every rotated file ends at a digest's lastSequence.
        let digested = Set(try Self.lines(digestsURL).map(Self.object).compactMap { AuditFormat.integer($0["lastSequence"]) })
        let rotatedFirsts = files.compactMap(AuditFormat.rotatedFirstSequence(fileName:))
        for next in rotatedFirsts.dropFirst() + [try Self.sequences(recordsURL).first ?? 0] {
            #expect(digested.contains(next - 1), "the file ending at \(next - 1) is covered by a digest ending there: \(digested.sorted())")
        }
        let report = try await verify()
        #expect(report.isIntact, "\(report.problems)")
        #expect(report.recordCount == 12)
    }

    @Test func aMissingMiddleFileIsDetected() async throws {
        _ = try await writeRotatingTrail(12)
        let files = try rotatedFiles()
        try #require(files.count >= 3)
        try FileManager.default.removeItem(at: directory.appendingPathComponent(files[1]))
        let report = try await verify()
        let third = AuditFormat.rotatedFirstSequence(fileName: files[2]) ?? 0
        let second = AuditFormat.rotatedFirstSequence(fileName: files[1]) ?? 0
        expectProblem(
            report,
            "\(files[2]) line 1 (sequence \(third)): sequence \(third) where \(second) was expected (records are missing: the records file before this one")
        expectProblem(report, "hash chain broken")
    }

    @Test func reorderedFilesAreDetected() async throws {
        _ = try await writeRotatingTrail(12)
        let files = try rotatedFiles()
        try #require(files.count >= 3)
        let (a, b) = (directory.appendingPathComponent(files[0]), directory.appendingPathComponent(files[1]))
        let swap = directory.appendingPathComponent("swap")
        try FileManager.default.moveItem(at: a, to: swap)
        try FileManager.default.moveItem(at: b, to: a)
        try FileManager.default.moveItem(at: swap, to: b)
        let report = try await verify()
        expectProblem(report, "\(files[0]): its first record is sequence \(AuditFormat.rotatedFirstSequence(fileName: files[1]) ?? 0), not 1")
        expectProblem(report, "records are repeated or out of order")
    }

    @Test func aTrailRotatesByAge() async throws {
        let trail = try await openTrail(rotation: AuditRotation(maximumBytes: nil, maximumAge: 0.05))
        for n in 1...3 {
            try await trail.append(Self.record(n))
            try await Task.sleep(for: .milliseconds(80))
        }
        #expect(await trail.rotations == 2)
        try await trail.close()
        #expect(try rotatedFiles() == [AuditFormat.rotatedRecordsFileName(firstSequence: 1), AuditFormat.rotatedRecordsFileName(firstSequence: 2)])
        #expect(try Self.sequences(recordsURL) == [3])
        #expect(try await verify().isIntact)
    }

    /// A crash between a rotation's rename and the new records.jsonl (or one that leaves only a torn line in the new
    /// file) is continued from the last rotated file: the chain carries on and the torn line is cut off.
    @Test func reopeningAfterARotationContinuesFromTheLastRotatedFile() async throws {
        _ = try await writeRotatingTrail(6)
        let lastSequence = try Self.sequences(recordsURL).last ?? 0
        let first = try Self.sequences(recordsURL).first ?? 0
        // As if the crash came right after the rename: no records.jsonl.
        try FileManager.default.moveItem(at: recordsURL, to: directory.appendingPathComponent(AuditFormat.rotatedRecordsFileName(firstSequence: first)))
        var trail = try await openTrail()
        try await trail.append(Self.record(lastSequence + 1))
        try await trail.close()
        #expect(try Self.sequences(recordsURL) == [lastSequence + 1])

        // As if the crash tore the first write into a new records.jsonl.
        try FileManager.default.moveItem(
            at: recordsURL, to: directory.appendingPathComponent(AuditFormat.rotatedRecordsFileName(firstSequence: lastSequence + 1)))
        try Data(#"{"hash":"0a"#.utf8).write(to: recordsURL)
        expectProblem(try await verify(), "records.jsonl line 1: incomplete last line")
        trail = try await openTrail()
        try await trail.append(Self.record(lastSequence + 2))
        try await trail.close()
        #expect(try Self.sequences(recordsURL) == [lastSequence + 2])
        let report = try await verify()
        #expect(report.isIntact, "\(report.problems)")
        #expect(report.recordCount == lastSequence + 2)
    }

}

/// A log handler that keeps every message and its metadata as text.
final class CollectedLogs: LogHandler, Sendable {
    private let lines = Mutex<[String]>([])
    var text: String { lines.withLock { $0.joined(separator: "\n") } }

    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }
    subscript(metadataKey _: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }

    func log(event: LogEvent) {
        lines.withLock { $0.append("\(event.message) \(event.metadata ?? [:])") }
    }
}
