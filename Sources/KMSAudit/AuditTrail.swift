import Crypto
public import Foundation
import JSON
public import KMS
public import Logging
import Metrics

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The tamper-evident audit trail: a SHA-256 hash chain of records with signed digests.
///
/// # The audit trail on disk
///
/// A trail is a directory (created 0700) holding append-only files (0600), one JSON object per line,
/// each line the compact, key-sorted serialisation of `JSONValue.canonicalBytes` followed by "\n".
///
/// ## records.jsonl and its rotated files
///
///     {"hash":"<hex>","previousHash":"<hex>","record":<CloudTrail record>,"sequence":n}
///
/// - Records are appended to `records.jsonl`. When it reaches ``AuditRotation/maximumBytes`` or its first record is
///   older than ``AuditRotation/maximumAge``, it is renamed `records-<first sequence, 20 digits>.jsonl` before the
///   next batch is written, and a new `records.jsonl` continues the same sequence and chain: the first record of
///   a new file chains to the last record of the previous one. A digest is written first, so every rotated file is
///   covered by a signed digest. Trent never deletes a rotated file; the verifier reads them all, in sequence order.
/// - `sequence`: 1, 2, 3, … with no gaps, carried on across restarts.
/// - `hash` = hex(HMAC-SHA256(chain key, `previousHash` as its 64 ASCII hex characters || canonical bytes of
///   `record`)), lowercase hex. Records written before the trail had a chain key use SHA-256 of the same bytes.
/// - `previousHash`: the `hash` of the line before; 64 "0"s for sequence 1.
///
/// Deleting, altering, inserting or reordering a line breaks the sequence, the chain or a hash. Without the chain
/// key nobody can recompute the chain, not even over records after the last digest.
///
/// ## chain-key.json
///
///     {"firstSequence":n,"sealedKey":"<base64>"}
///
/// - A random 256-bit key, made when the trail is opened without one, kept only sealed by the signer (the token's
///   sealing key); records from sequence `n` on are chained with it.
///
/// ## digests.jsonl
///
///     {"chainKeyFrom":n,"digestTime":"<ISO 8601>","firstSequence":a,"lastHash":"<hex>","lastSequence":b,
///      "previousDigestHash":"<hex>","signature":"<base64>"}
///
/// - Covers records `a...b`: `a` is the previous digest's `lastSequence` + 1 (1 for the first), `lastHash`
///   is the `hash` of record `b`, so a digest commits to every record up to `b` through the chain.
/// - `signature` = ``AuditDigestSigner/sign(_:)`` of the canonical bytes of the object *without* `signature`
///   (with ``TokenDigestSigner``: iv || AES-GCM under the token's sealing key of SHA-256 of those bytes).
/// - `previousDigestHash` = hex(SHA-256(canonical bytes of the previous digest line, signature included));
///   64 "0"s for the first. Digests form a chain of their own, so deleting one shows.
/// - `chainKeyFrom`: the chain key's `firstSequence`, signed with the rest, so the key file cannot be dropped
///   unnoticed while one digest made since remains (digests written before chain keys have no such member).
///
/// A digest is written on ``AuditTrail/writeDigest()``, on ``AuditTrail/close()``, and automatically once
/// `recordsPerDigest` records are undigested (in the background: appends do not wait for it, so an automatic
/// digest covers at least that many records). Records after the last digest are protected by the chain only
/// until the next one.
///
/// ## Durability
///
/// Both files are opened with O_APPEND; every batch of lines is written and fsynced (`FileHandle.synchronize`)
/// before any append in it returns. A failed write or fsync is cut back (truncated, and the truncation fsynced)
/// to the last durable line and every append in that batch throws; the chain then continues from the last durable
/// record. If the cut-back fails as well, every later append tries it again first and throws until it succeeds,
/// so the trail recovers by itself when the disk does (Tests/IOFaults, docs/reliability.md "Storage faults"). A
/// torn last line left by a crash (never acknowledged) is cut off when the trail is reopened.
///
/// Nothing here logs record contents: log entries carry counts and sequence numbers only.
///
/// ## Writing
///
/// Concurrent appends are group-committed: records that arrive while a write + fsync is in flight are written
/// together in the next one, so there is one fsync per batch rather than per record.
public actor AuditTrail: AuditSink {
    public nonisolated let directory: URL
    private let signer: any AuditDigestSigner
    private let recordsPerDigest: Int
    private let logger: Logger
    private let rotation: AuditRotation
    /// The current records file, `records.jsonl`; replaced when it rotates.
    private var records: AppendOnlyFile
    private let digests: AppendOnlyFile
    /// The first sequence in `records.jsonl` (nil while it is empty), which names it when it rotates, and when its
    /// first record was written (its age).
    private var currentFileFirstSequence: Int?
    private var currentFileStarted: Date
    /// The key of the hash chain, and the first sequence chained with it.
    private let chainKey: SymmetricKey
    private let chainKeyFrom: Int
    /// Blocking file I/O runs here, never on Swift's cooperative pool.
    private let io: DispatchQueue

    /// The last durable record.
    private var lastSequence: Int
    private var lastHash: String
    /// The last record a digest covers, and the hash of the last digest line.
    private var digestedSequence: Int
    private var lastDigestHash: String

    private struct Pending {
        /// The record's canonical bytes, serialised by the caller so the actor only chains and writes.
        var recordBytes: [UInt8]
        var continuation: CheckedContinuation<Void, any Error>
    }
    private var pending: [Pending] = []
    private var drainTask: Task<Void, Never>?
    private var digestChain: Task<Void, any Error>?
    private var automaticDigestScheduled = false
    private enum State { case open, closing, closed }
    private var state = State.open

    /// Write + fsync batches of records so far (tests: group commit).
    var batchesWritten = 0
    /// Why the last batch could not be written, until one is: the trail cannot append now (readiness).
    private var lastWriteFailure: String?
    private let metrics = AuditMetrics()
    /// Digests written so far.
    var digestsWritten = 0
    /// Records files rotated so far (tests).
    var rotations = 0

    /// Opens (or continues) the trail in `directory`, created 0700 if missing. Continuing reads the last
    /// record's sequence and hash, the last digest and the chain key, so both chains carry on across restarts; a
    /// trail without a chain key gets one, from its next record on.
    ///
    /// - Throws: ``AuditTrailError`` when the files cannot be opened, their last lines cannot be read, the chain key
    ///   does not unseal, or the digests cover records the records file no longer holds (the trail was cut short:
    ///   investigate, do not write over it).
    public init(
        directory: URL, signer: any AuditDigestSigner, recordsPerDigest: Int = 1_000, rotation: AuditRotation = .never, logger: Logger
    ) async throws {
        guard recordsPerDigest > 0 else { throw AuditTrailError("audit.recordsPerDigest must be positive") }
        self.directory = directory
        self.signer = signer
        self.recordsPerDigest = recordsPerDigest
        self.rotation = rotation
        self.logger = logger
        self.io = DispatchQueue(label: "trent.audit.io")

        let manager = FileManager.default
        if !manager.fileExists(atPath: directory.path) {
            try manager.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let recordsURL = directory.appendingPathComponent(AuditFormat.recordsFileName)
        let digestsURL = directory.appendingPathComponent(AuditFormat.digestsFileName)
        let created = !manager.fileExists(atPath: recordsURL.path) || !manager.fileExists(atPath: digestsURL.path)

        let lastRecord = try AppendOnlyFile.lastCompleteLine(of: recordsURL)
        let lastDigest = try AppendOnlyFile.lastCompleteLine(of: digestsURL)
        // An empty records.jsonl (or none: a crash between a rotation's rename and the new file) continues from the
        // last rotated file. Rotated files are renamed only after their last batch was fsynced, so they are whole.
        var lastRecordLine = lastRecord.line
        if lastRecordLine == nil, let rotated = try AuditFormat.rotatedRecordFiles(in: directory).last {
            lastRecordLine = try AppendOnlyFile.lastCompleteLine(of: directory.appendingPathComponent(rotated.name)).line
        }
        let firstRecord = try lastRecord.line == nil ? nil : AppendOnlyFile.firstCompleteLine(of: recordsURL)
        records = try AppendOnlyFile(url: recordsURL)
        digests = try AppendOnlyFile(url: digestsURL)
        if created { synchronizeDirectory(directory) }
        for (file, last) in [(records, lastRecord), (digests, lastDigest)] where file.size > last.completeLength {
            logger.warning(
                "Cutting off a torn last line of the audit trail (an interrupted write)",
                metadata: ["audit.file": "\(file.url.lastPathComponent)", "audit.bytes": "\(file.size - last.completeLength)"])
            try file.truncate(to: last.completeLength)
        }

        if let line = lastRecordLine {
            guard let object = AuditFormat.parse(line), let sequence = AuditFormat.integer(object["sequence"]), sequence > 0,
                let hash = AuditFormat.string(object["hash"]), AuditFormat.isHash(hash)
            else { throw AuditTrailError("the last line of \(AuditFormat.recordsFileName) is not a valid audit record") }
            (lastSequence, lastHash) = (sequence, hash)
        } else {
            (lastSequence, lastHash) = (0, AuditFormat.zeroHash)
        }
        if let line = firstRecord, let object = AuditFormat.parse(line), let sequence = AuditFormat.integer(object["sequence"]) {
            currentFileFirstSequence = sequence
            currentFileStarted = AuditFormat.eventTime(of: object) ?? Date()
        } else {
            (currentFileFirstSequence, currentFileStarted) = (nil, Date())
        }
        if let line = lastDigest.line {
            guard let object = AuditFormat.parse(line), let covered = AuditFormat.integer(object["lastSequence"]) else {
                throw AuditTrailError("the last line of \(AuditFormat.digestsFileName) is not a valid audit digest")
            }
            guard covered <= lastSequence else {
                throw AuditTrailError(
                    "\(AuditFormat.digestsFileName) covers records through sequence \(covered) but \(AuditFormat.recordsFileName) "
                        + "ends at sequence \(lastSequence): records are missing; verify the trail")
            }
            (digestedSequence, lastDigestHash) = (covered, AuditFormat.sha256Hex(JSONValue.object(object).canonicalBytes))
        } else {
            (digestedSequence, lastDigestHash) = (0, AuditFormat.zeroHash)
        }
        (chainKey, chainKeyFrom) = try await Self.openChainKey(in: directory, from: lastSequence + 1, signer: signer, logger: logger)
        let (opened, digested) = (lastSequence, digestedSequence)
        logger.info("Audit trail opened", metadata: ["audit.lastSequence": "\(opened)", "audit.digestedSequence": "\(digested)"])
    }

    // MARK: Records

    /// Appends one record; returns only after it is written and fsynced.
    ///
    /// - Throws: `KMSError(.internalFailure)` when the record could not be stored (every append of a failed
    ///   batch throws), the record is not representable in JSON, or the trail is closed.
    public func append(canonicalRecord recordBytes: [UInt8]) async throws {
        // `canonicalBytes` gives `null` when a value is not representable (a NaN or infinite number).
        guard recordBytes.first == UInt8(ascii: "{") else {
            throw KMSError(.internalFailure, "The audit record is not representable in JSON.")
        }
        guard state == .open else { throw KMSError(.internalFailure, "The audit trail is closed.") }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            pending.append(Pending(recordBytes: recordBytes, continuation: continuation))
            metrics.queueDepth.set(pending.count)
            if drainTask == nil {
                drainTask = Task { await self.drain() }
            }
        }
    }

    /// Writes batches until nothing is waiting: everything that arrived during one write goes in the next.
    private func drain() async {
        while !pending.isEmpty {
            let written = pending
            pending.removeAll(keepingCapacity: true)
            metrics.queueDepth.set(0)
            metrics.batchSize.record(written.count)

            var sequence = lastSequence
            var hash = lastHash
            var bytes: [UInt8] = []
            bytes.reserveCapacity(written.reduce(0) { $0 + $1.recordBytes.count + 200 })
            for entry in written {
                let nextHash = AuditFormat.chainHash(
                    previousHash: hash, recordBytes: entry.recordBytes, key: sequence + 1 >= chainKeyFrom ? chainKey : nil)
                sequence += 1
                bytes += AuditFormat.recordLine(sequence: sequence, previousHash: hash, hash: nextHash, recordBytes: entry.recordBytes)
                hash = nextHash
            }

            let first = lastSequence + 1
            if rotationIsDue() { await rotate() }
            let startsFile = records.size == 0
            do {
                try await onIOQueue { [records, bytes, metrics] in
                    let start = ContinuousClock.now
                    defer { metrics.writeDuration.record(duration: ContinuousClock.now - start) }
                    try records.append(bytes)
                }
                (lastSequence, lastHash) = (sequence, hash)
                // A file whose first line did not parse keeps its name: it is not rotated under a sequence it does not start at.
                if startsFile { (currentFileFirstSequence, currentFileStarted) = (first, Date()) }
                batchesWritten += 1
                lastWriteFailure = nil
                logger.debug(
                    "Audit records committed",
                    metadata: ["audit.firstSequence": "\(first)", "audit.lastSequence": "\(sequence)", "audit.count": "\(written.count)"])
                for entry in written { entry.continuation.resume() }
                scheduleAutomaticDigestIfDue()
            } catch {
                logger.error(
                    "Audit records could not be written",
                    metadata: ["audit.count": "\(written.count)", "audit.firstSequence": "\(first)", "error": "\(error)"])
                lastWriteFailure = "\(error)"
                metrics.writeFailures.increment()
                // The request may have changed the store already: it is refused, not undone (docs/reliability.md).
                let failure = KMSError(.internalFailure, "The audit record could not be stored; the request is not acknowledged.", cause: error)
                for entry in written { entry.continuation.resume(throwing: failure) }
            }
        }
        drainTask = nil
    }

    // MARK: Rotation

    private func rotationIsDue() -> Bool {
        guard currentFileFirstSequence != nil, records.size > 0 else { return false }
        if let maximumBytes = rotation.maximumBytes, records.size >= maximumBytes { return true }
        if let maximumAge = rotation.maximumAge, Date().timeIntervalSince(currentFileStarted) >= maximumAge { return true }
        return false
    }

    /// Writes a digest covering the file, renames `records.jsonl` to `records-<first sequence>.jsonl` and starts a new
    /// `records.jsonl`, fsyncing the directory after each step, so a crash leaves either the old name or both files
    /// (or the rotated file alone, which opening continues from). A failure is logged and the trail keeps appending
    /// to the file it has: rotation never costs a record.
    private func rotate() async {
        guard let first = currentFileFirstSequence else { return }
        do {
            try await writeDigest()
        } catch {
            logger.error("The audit digest before rotating the records file failed; rotating anyway", metadata: ["error": "\(error)"])
        }
        let (current, directory, last) = (records, directory, lastSequence)
        let rotatedName = AuditFormat.rotatedRecordsFileName(firstSequence: first)
        do {
            let next = try await onIOQueue { () throws -> AppendOnlyFile in
                let rotatedURL = directory.appendingPathComponent(rotatedName)
                guard !FileManager.default.fileExists(atPath: rotatedURL.path) else {
                    throw AuditTrailError("\(rotatedName) already exists")
                }
                guard rename(current.url.path, rotatedURL.path) == 0 else {
                    throw AuditTrailError("cannot rename \(AuditFormat.recordsFileName) to \(rotatedName): \(String(cString: strerror(errno)))")
                }
                synchronizeDirectory(directory)
                do {
                    let next = try AppendOnlyFile(url: current.url)
                    synchronizeDirectory(directory)
                    return next
                } catch {
                    // Back to the one file, so appends carry on where they were.
                    _ = rename(rotatedURL.path, current.url.path)
                    synchronizeDirectory(directory)
                    throw error
                }
            }
            try? await onIOQueue { try current.close() }
            records = next
            (currentFileFirstSequence, currentFileStarted) = (nil, Date())
            rotations += 1
            logger.info(
                "Audit records file rotated",
                metadata: ["audit.file": "\(rotatedName)", "audit.firstSequence": "\(first)", "audit.lastSequence": "\(last)"])
        } catch {
            logger.error("Rotating the audit records file failed; appending to it still", metadata: ["error": "\(error)"])
        }
    }

    /// Reads the trail's chain key, or makes one for records from `next` on: written to a temporary file, fsynced and
    /// renamed, so a crash leaves either no key file or a whole one.
    private static func openChainKey(
        in directory: URL, from next: Int, signer: any AuditDigestSigner, logger: Logger
    ) async throws -> (SymmetricKey, Int) {
        let url = directory.appendingPathComponent(AuditFormat.chainKeyFileName)
        if let bytes = FileManager.default.contents(atPath: url.path) {
            guard let file = AuditFormat.ChainKeyFile(parsing: Array(bytes)) else {
                throw AuditTrailError("\(AuditFormat.chainKeyFileName) is not a chain key file; verify the trail")
            }
            guard let key = try await signer.unsealChainKey(file.sealedKey), key.count == 32 else {
                throw AuditTrailError("\(AuditFormat.chainKeyFileName) does not unseal with this token; verify the trail")
            }
            return (SymmetricKey(data: key), file.firstSequence)
        }
        let key = SymmetricKey(size: .bits256)
        let file = AuditFormat.ChainKeyFile(
            firstSequence: next, sealedKey: try await signer.sealChainKey(key.withUnsafeBytes { Array($0) }))
        let temporary = directory.appendingPathComponent(AuditFormat.chainKeyFileName + ".new")
        try AppendOnlyFile.writeDurably(file.bytes, to: temporary)
        guard rename(temporary.path, url.path) == 0 else {
            throw AuditTrailError("cannot create \(AuditFormat.chainKeyFileName): \(String(cString: strerror(errno)))")
        }
        synchronizeDirectory(directory)
        logger.info("Audit chain key created", metadata: ["audit.chainKeyFrom": "\(next)"])
        return (key, next)
    }

    // MARK: Digests

    /// Writes a signed digest covering every record since the previous digest (no-op if none).
    public func writeDigest() async throws {
        // Digests are chained, so they are written one at a time, in order.
        let previous = digestChain
        let task = Task {
            _ = await previous?.result
            try await self.performDigest()
        }
        digestChain = task
        try await task.value
    }

    private func performDigest() async throws {
        let first = digestedSequence + 1
        let (last, hash) = (lastSequence, lastHash)
        guard last >= first else { return }
        var object: [String: JSONValue] = [
            "chainKeyFrom": .number(Double(chainKeyFrom)),
            "firstSequence": .number(Double(first)),
            "lastSequence": .number(Double(last)),
            "lastHash": .string(hash),
            "digestTime": .string(Date().formatted(.iso8601)),
            "previousDigestHash": .string(lastDigestHash),
        ]
        let signature = try await signer.sign(JSONValue.object(object).canonicalBytes)
        object["signature"] = .string(Data(signature).base64EncodedString())
        let line = JSONValue.object(object).canonicalBytes
        do {
            try await onIOQueue { [digests] in try digests.append(line + [AuditFormat.newline]) }
        } catch {
            logger.error(
                "Audit digest could not be written",
                metadata: ["audit.firstSequence": "\(first)", "audit.lastSequence": "\(last)", "error": "\(error)"])
            throw KMSError(.internalFailure, "The audit digest could not be stored.", cause: error)
        }
        digestedSequence = last
        lastDigestHash = AuditFormat.sha256Hex(line)
        digestsWritten += 1
        logger.info("Audit digest written", metadata: ["audit.firstSequence": "\(first)", "audit.lastSequence": "\(last)"])
    }

    private func scheduleAutomaticDigestIfDue() {
        guard !automaticDigestScheduled, lastSequence - digestedSequence >= recordsPerDigest else { return }
        automaticDigestScheduled = true
        Task {
            do {
                try await self.writeDigest()
                self.automaticDigestFinished(succeeded: true)
            } catch {
                // Logged by performDigest or the signer; the next digest covers these records.
                self.logger.error("Automatic audit digest failed", metadata: ["error": "\(error)"])
                self.automaticDigestFinished(succeeded: false)
            }
        }
    }

    /// After a success, records that arrived meanwhile may be due already. After a failure the next committed batch
    /// tries again: retrying at once would spin (signing in the token each time) for as long as the disk fails.
    private func automaticDigestFinished(succeeded: Bool) {
        automaticDigestScheduled = false
        if succeeded, state == .open { scheduleAutomaticDigestIfDue() }
    }

    // MARK: Readiness

    /// The readiness probe: nil when the trail can append (it is open, its records file is writable, and its last
    /// write succeeded or a test write does now), otherwise why not. Adds no record: a probe every few seconds must not
    /// grow the chain.
    ///
    /// After a failed batch only a write tells whether the disk takes one again, and a server taken out of service
    /// for it gets no request that would: so the probe itself cuts the records file back if it must, and writes and
    /// fsyncs a scratch file (`.ready-probe`) beside it.
    public func readinessProblem() async -> String? {
        guard state == .open else { return "the audit trail is closed" }
        if let failure = lastWriteFailure {
            do {
                try await onIOQueue { [records, directory] in
                    try records.append([])
                    try AppendOnlyFile.writeDurably([UInt8(ascii: "\n")], to: directory.appendingPathComponent(".ready-probe"))
                }
                lastWriteFailure = nil
            } catch {
                return "the last audit write failed (\(failure)), and a test write fails too: \(error)"
            }
        }
        guard access(records.url.path, W_OK) == 0 else {
            return "\(records.url.lastPathComponent) is not writable: \(String(cString: strerror(errno)))"
        }
        return nil
    }

    // MARK: Shutdown

    /// Waits for pending appends, writes a final digest and closes the files; later appends throw.
    /// Calling it again does nothing.
    public func close() async throws {
        guard state == .open else { return }
        state = .closing
        await drainTask?.value
        defer { state = .closed }
        try await writeDigest()
        try await onIOQueue { [records, digests] in
            try records.close()
            try digests.close()
        }
        logger.info(
            "Audit trail closed", metadata: ["audit.lastSequence": "\(lastSequence)", "audit.digestedSequence": "\(digestedSequence)"])
    }

    // MARK: Testing

    /// Tests: make record writes fail (after writing half a batch) while `fail` is set.
    func injectRecordWriteFailures(_ fail: Bool) async throws {
        try await onIOQueue { [records] in records.injectFailures = fail }
    }

    private func onIOQueue<R: Sendable>(_ work: @escaping @Sendable () throws -> R) async throws -> R {
        try await withCheckedThrowingContinuation { continuation in
            io.async {
                continuation.resume(with: Result { try work() })
            }
        }
    }
}

/// The trail's metrics: the size of each group-committed batch, the time its write and fsync took, records waiting
/// for the next batch, and failed writes. Counts and durations only, never record contents.
struct AuditMetrics: Sendable {
    let batchSize = Recorder(label: "trent_audit_batch_records", aggregate: true)
    let writeDuration = Metrics.Timer(label: "trent_audit_write_fsync_duration_seconds")
    let queueDepth = Meter(label: "trent_audit_queue_depth")
    let writeFailures = Counter(label: "trent_audit_write_failures_total")
}
