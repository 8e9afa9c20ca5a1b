import Crypto
import Foundation
import JSON
import KMS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The file names, hashing rules and line shapes shared by ``AuditTrail`` and ``AuditVerifier``
/// (described in full at the top of AuditTrail.swift).
enum AuditFormat {
    static let recordsFileName = "records.jsonl"
    static let digestsFileName = "digests.jsonl"
    /// The `previousHash` of sequence 1 and the `previousDigestHash` of the first digest.
    static let zeroHash = String(repeating: "0", count: 64)
    static let newline: UInt8 = 0x0A

    static let chainKeyFileName = "chain-key.json"

    /// A rotated records file: `records-<first sequence, 20 digits>.jsonl`, so names sort in sequence order.
    static func rotatedRecordsFileName(firstSequence: Int) -> String {
        let digits = String(firstSequence)
        return "records-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".jsonl"
    }

    /// The first sequence a rotated records file's name states; nil for any other name.
    static func rotatedFirstSequence(fileName name: String) -> Int? {
        guard name.hasPrefix("records-"), name.hasSuffix(".jsonl") else { return nil }
        let digits = name.dropFirst("records-".count).dropLast(".jsonl".count)
        guard digits.count == 20, digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int(digits), value > 0 else { return nil }
        return value
    }

    /// The rotated records files in `directory`, in the order their names state (oldest first).
    static func rotatedRecordFiles(in directory: URL) throws -> [(name: String, firstSequence: Int)] {
        guard FileManager.default.fileExists(atPath: directory.path) else { return [] }
        return try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .compactMap { name in rotatedFirstSequence(fileName: name).map { (name: name, firstSequence: $0) } }
            .sorted { $0.firstSequence < $1.firstSequence }
    }

    /// The `record.eventTime` of a records line (CloudTrail's ISO 8601 time), when it has one: a file's age.
    static func eventTime(of line: [String: JSONValue]) -> Date? {
        guard case .object(let record)? = line["record"], let text = string(record["eventTime"]) else { return nil }
        return try? Date(text, strategy: .iso8601)
    }

    /// hex(HMAC-SHA256(chain key, previousHash as ASCII hex || canonical bytes of the record)); without a key (records
    /// written before the trail had one), hex(SHA-256(...)) of the same bytes.
    static func chainHash(previousHash: String, recordBytes: [UInt8], key: SymmetricKey?) -> String {
        guard let key else {
            var hasher = SHA256()
            hasher.update(data: Array(previousHash.utf8))
            hasher.update(data: recordBytes)
            return hasher.finalize().hexString
        }
        var mac = HMAC<SHA256>(key: key)
        mac.update(data: Array(previousHash.utf8))
        mac.update(data: recordBytes)
        return Array(mac.finalize()).hexString
    }

    /// The chain key's file: `{"firstSequence": n, "sealedKey": "<base64>"}`, the 32-byte key sealed by the signer
    /// (the token): records from sequence `n` on are chained with it.
    struct ChainKeyFile: Equatable {
        var firstSequence: Int
        var sealedKey: [UInt8]

        var bytes: [UInt8] {
            JSONValue.object([
                "firstSequence": .number(Double(firstSequence)), "sealedKey": .string(Data(sealedKey).base64EncodedString()),
            ]).canonicalBytes + [newline]
        }

        /// Nil when the file is not a chain key file.
        init?(parsing bytes: [UInt8]) {
            let text = bytes.last == newline ? Array(bytes.dropLast()) : bytes
            guard let object = parse(text), object.count == 2, let first = integer(object["firstSequence"]), first > 0,
                let encoded = string(object["sealedKey"]), let sealed = Data(base64Encoded: encoded)
            else { return nil }
            self.init(firstSequence: first, sealedKey: Array(sealed))
        }

        init(firstSequence: Int, sealedKey: [UInt8]) {
            self.firstSequence = firstSequence
            self.sealedKey = sealedKey
        }
    }

    static func sha256Hex(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).hexString }

    /// The line of one record, with its newline: the canonical bytes of
    /// `{"hash": hash, "previousHash": previousHash, "record": record, "sequence": sequence}`, the record copied
    /// in as already serialised rather than serialised a second time.
    static func recordLine(sequence: Int, previousHash: String, hash: String, recordBytes: [UInt8]) -> [UInt8] {
        var line = CanonicalObjectWriter(capacity: recordBytes.count + 200)
        line.member("hash", string: hash)
        line.member("previousHash", string: previousHash)
        line.member("record", canonicalBytes: recordBytes)
        line.member("sequence", .number(Double(sequence)))
        return line.bytes + [newline]
    }

    /// Parses one line; nil when it is not a JSON object.
    static func parse(_ line: some Sequence<UInt8>) -> [String: JSONValue]? {
        // Deeper than request bodies may be: a record nests the request's parameters two levels down.
        guard case .object(let object)? = try? JSONParser.parse(Array(line), as: JSONValue.self, maximumDepth: 128) else { return nil }
        return object
    }

    /// A JSON number that is a whole number, as an Int.
    static func integer(_ value: JSONValue?) -> Int? {
        guard case .number(let number)? = value, number.rounded() == number, abs(number) < 1e15 else { return nil }
        return Int(number)
    }

    static func string(_ value: JSONValue?) -> String? {
        guard case .string(let string)? = value else { return nil }
        return string
    }

    static func isHash(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// The lines of a file, split at "\n". A last piece without its newline is returned in `torn`.
    static func lines(of bytes: [UInt8]) -> (lines: [ArraySlice<UInt8>], torn: ArraySlice<UInt8>?) {
        var pieces = bytes.split(separator: newline, omittingEmptySubsequences: false)
        let last = pieces.removeLast()
        return (pieces, last.isEmpty ? nil : last)
    }
}

/// When `records.jsonl` is renamed aside and a new one started (AuditTrail.swift, "records.jsonl and its rotated
/// files"); nil means never by that measure.
public struct AuditRotation: Sendable, Equatable {
    public var maximumBytes: UInt64?
    /// Seconds.
    public var maximumAge: Double?

    public init(maximumBytes: UInt64?, maximumAge: Double?) {
        self.maximumBytes = maximumBytes
        self.maximumAge = maximumAge
    }

    public static let never = AuditRotation(maximumBytes: nil, maximumAge: nil)
}

/// Why the trail cannot be opened or written.
public struct AuditTrailError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// An append-only file descriptor (O_APPEND) with write + fsync per call. Used only from one serial
/// dispatch queue, hence `@unchecked Sendable`.
final class AppendOnlyFile: @unchecked Sendable {
    let url: URL
    private let handle: FileHandle
    /// The length of the durable content: where a failed write is cut back to.
    private(set) var size: UInt64
    /// Set when a failed write could not be cut back yet: nothing may be appended after a torn line, so the next
    /// append first tries the cut-back again (see ``append(_:)``).
    private(set) var needsCutBack = false
    /// Tests: fail the writes (after writing half of the bytes, to exercise the roll-back) while set.
    var injectFailures = false

    init(url: URL) throws {
        self.url = url
        let descriptor = open(url.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw AuditTrailError("cannot open \(url.lastPathComponent) for appending: \(String(cString: strerror(errno)))")
        }
        handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        size = try handle.seekToEnd()
    }

    /// Writes `bytes` at the end and fsyncs. On failure the file is cut back to its previous length so the
    /// next call continues from the last durable line.
    ///
    /// If the cut-back fails too (the disk still fails), the next call retries it before writing, and fails while
    /// it cannot be done: the trail recovers by itself once the disk works again, instead of refusing every
    /// request until a restart. After a failed fsync the kernel may have dropped the unwritten pages and a later
    /// fsync may succeed without them, so nothing written by a failed call is ever kept: only what the last
    /// successful fsync covered (`size`) survives, and the cut-back is fsynced before anything follows it.
    func append(_ bytes: [UInt8]) throws {
        if needsCutBack {
            do {
                try cutBack()
            } catch {
                throw AuditTrailError("\(url.lastPathComponent) has a torn write that could not be cut back yet: \(error)")
            }
            needsCutBack = false
        }
        do {
            if injectFailures {
                try handle.write(contentsOf: bytes.prefix(bytes.count / 2))
                throw AuditTrailError("injected write failure")
            }
            try handle.write(contentsOf: bytes)
            try handle.synchronize()
            size += UInt64(bytes.count)
        } catch {
            do {
                try cutBack()
            } catch {
                needsCutBack = true
            }
            throw error
        }
    }

    /// Truncates the file to its durable length, and fsyncs that.
    private func cutBack() throws {
        try handle.truncate(atOffset: size)
        try handle.synchronize()
    }

    /// Creates `url` (0600) holding `bytes`, fsynced.
    static func writeDurably(_ bytes: [UInt8], to url: URL) throws {
        let descriptor = open(url.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw AuditTrailError("cannot create \(url.lastPathComponent): \(String(cString: strerror(errno)))") }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        try handle.write(contentsOf: bytes)
        try handle.synchronize()
        try handle.close()
    }

    /// Cuts the file back to `length` (a torn last line left by a crash).
    func truncate(to length: UInt64) throws {
        try handle.truncate(atOffset: length)
        try handle.synchronize()
        size = length
    }

    func close() throws {
        try handle.close()
    }

    /// The last complete line ("\n"-terminated) of `url`, and the length of the file up to and including it.
    /// Reads backwards from the end, so opening a long trail does not read the whole file; each chunk is searched
    /// once, and a last line longer than ``maximumLineLength`` is refused (an edited file, not a trail).
    static func lastCompleteLine(of url: URL) throws -> (line: [UInt8]?, completeLength: UInt64) {
        guard FileManager.default.fileExists(atPath: url.path) else { return (nil, 0) }
        let reader = try FileHandle(forReadingFrom: url)
        defer { try? reader.close() }
        let fileSize = try reader.seekToEnd()
        let chunk: UInt64 = 64 * 1024
        var chunks: [[UInt8]] = []  // read so far, last chunk first
        var start = fileSize
        /// Offsets in the file of the newlines found, from the end.
        var newlines: [UInt64] = []
        while newlines.count < 2 && start > 0 {
            guard fileSize - start <= UInt64(maximumLineLength) else {
                throw AuditTrailError("the last line of \(url.lastPathComponent) is longer than \(maximumLineLength) bytes")
            }
            let next = start >= chunk ? start - chunk : 0
            try reader.seek(toOffset: next)
            let bytes = Array(try reader.read(upToCount: Int(start - next)) ?? Data())
            for index in bytes.indices.reversed() where bytes[index] == AuditFormat.newline {
                newlines.append(next + UInt64(index))
                if newlines.count == 2 { break }
            }
            chunks.append(bytes)
            start = next
        }
        guard let last = newlines.first else { return (nil, 0) }
        let lineStart = newlines.count == 2 ? newlines[1] + 1 : 0
        let tail = chunks.reversed().flatMap { $0 }
        let base = start
        return (Array(tail[Int(lineStart - base)..<Int(last - base)]), last + 1)
    }

    /// The first complete line of `url` (nil when it has none), read forwards in chunks up to
    /// ``maximumLineLength``: the first record of the current file, which names it when it rotates.
    static func firstCompleteLine(of url: URL) throws -> [UInt8]? {
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let reader = try FileHandle(forReadingFrom: url)
        defer { try? reader.close() }
        var bytes: [UInt8] = []
        while bytes.count <= maximumLineLength {
            guard let chunk = try reader.read(upToCount: 64 * 1024), !chunk.isEmpty else { return nil }
            let start = bytes.count
            bytes += chunk
            if let end = bytes[start...].firstIndex(of: AuditFormat.newline) { return Array(bytes[..<end]) }
        }
        throw AuditTrailError("the first line of \(url.lastPathComponent) is longer than \(maximumLineLength) bytes")
    }

    /// Longer than any record Trent writes (parameters are bounded), far shorter than memory.
    static let maximumLineLength = 16 << 20
}

/// fsyncs a directory so newly created entries in it survive a crash.
func synchronizeDirectory(_ url: URL) {
    let descriptor = open(url.path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return }
    _ = fsync(descriptor)
    _ = close(descriptor)
}
