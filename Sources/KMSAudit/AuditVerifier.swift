import Crypto
public import Foundation
import JSON
import KMS

/// What ``AuditVerifier`` found.
public struct AuditVerificationReport: Sendable {
    /// Record lines read (including damaged ones).
    public var recordCount: Int
    /// Digest lines read (including damaged ones).
    public var digestCount: Int
    /// Empty when the trail is intact; each names the file, the line or sequence, and what is wrong.
    public var problems: [String]
    public var isIntact: Bool { problems.isEmpty }

    public init(recordCount: Int, digestCount: Int, problems: [String]) {
        self.recordCount = recordCount
        self.digestCount = digestCount
        self.problems = problems
    }
}

/// Checks a trail written by ``AuditTrail`` (format at the top of AuditTrail.swift): the record sequence and the
/// keyed hash chain (with the chain key the token unseals), every record's hash, the digest chain, each digest's
/// coverage, `lastHash` and `chainKeyFrom` against the records and the key, and each digest's signature.
///
/// So an intact report proves: every record up to the last digest is as written, in order, none missing; every
/// record after it is as written too, since only the token's holder can compute the chain. What it cannot see:
/// records cut from the end (after the last digest, or *together with* the digests covering them). Anchor the
/// latest digest elsewhere (or watch the trail grow) for that.
public enum AuditVerifier {
    /// - Throws: when the directory or its files cannot be read, or the signer cannot check a signature
    ///   (the token is unavailable). Damage is reported in ``AuditVerificationReport/problems``, not thrown.
    public static func verify(directory: URL, signer: any AuditDigestSigner) async throws -> AuditVerificationReport {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AuditTrailError("\(directory.path) is not an audit trail directory")
        }
        var problems: [String] = []
        let chainKey = try await readChainKey(directory, signer: signer, &problems)
        let records = try readRecordLines(directory, &problems)
        let chain = verifyRecords(records, chainKey: chainKey, &problems)
        let digests = try readLines(directory, AuditFormat.digestsFileName, &problems)
        try await verifyDigests(digests, chain: chain, chainKeyFrom: chainKey?.from, signer: signer, &problems)
        return AuditVerificationReport(recordCount: records.count, digestCount: digests.count, problems: problems)
    }

    private static func readLines(_ directory: URL, _ name: String, _ problems: inout [String]) throws -> [ArraySlice<UInt8>] {
        let url = directory.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else { return [] }
        let (lines, torn) = AuditFormat.lines(of: Array(try Data(contentsOf: url)))
        if torn != nil {
            problems.append("\(name) line \(lines.count + 1): incomplete last line (no newline; an interrupted write or an edit)")
        }
        return lines
    }

    /// One line of a records file, with where it came from for the problems that name it.
    private struct RecordLine {
        var file: String
        var lineNumber: Int
        var bytes: ArraySlice<UInt8>
    }

    /// The lines of every records file in sequence order: the rotated files by the first sequence their names state,
    /// then `records.jsonl`. A rotated file whose first record is not the sequence its name states was renamed or
    /// swapped; one missing from the middle shows as a gap in the sequence, where the chain also breaks.
    private static func readRecordLines(_ directory: URL, _ problems: inout [String]) throws -> [RecordLine] {
        var files = try AuditFormat.rotatedRecordFiles(in: directory).map { (name: $0.name, stated: Optional($0.firstSequence)) }
        files.append((name: AuditFormat.recordsFileName, stated: nil))
        var result: [RecordLine] = []
        for file in files {
            let lines = try readLines(directory, file.name, &problems)
            if let stated = file.stated, let first = lines.first.flatMap(AuditFormat.parse).flatMap({ AuditFormat.integer($0["sequence"]) }),
                first != stated
            {
                problems.append("\(file.name): its first record is sequence \(first), not \(stated) as its name states (files renamed or reordered)")
            }
            result += lines.enumerated().map { RecordLine(file: file.name, lineNumber: $0.offset + 1, bytes: $0.element) }
        }
        return result
    }

    /// The chain key and the first sequence it chains; nil when the trail has none (written before chain keys).
    private static func readChainKey(
        _ directory: URL, signer: any AuditDigestSigner, _ problems: inout [String]
    ) async throws -> (key: SymmetricKey?, from: Int)? {
        let url = directory.appendingPathComponent(AuditFormat.chainKeyFileName)
        guard let bytes = FileManager.default.contents(atPath: url.path) else { return nil }
        guard let file = AuditFormat.ChainKeyFile(parsing: Array(bytes)) else {
            problems.append("\(AuditFormat.chainKeyFileName): not a chain key file")
            return nil
        }
        guard let key = try await signer.unsealChainKey(file.sealedKey), key.count == 32 else {
            problems.append("\(AuditFormat.chainKeyFileName): the key does not unseal with this token (forged, or another token's)")
            return (nil, file.firstSequence)
        }
        return (SymmetricKey(data: key), file.firstSequence)
    }

    /// What the digests are checked against.
    private struct Chain {
        /// The hash each sequence was recorded with (first occurrence).
        var hashes: [Int: String] = [:]
        var lastSequence = 0
    }

    /// - Parameter chainKey: nil for a trail without a key; a nil `key` when the key file did not unseal, so hashes
    ///   from `from` on cannot be checked (reported once already).
    private static func verifyRecords(
        _ lines: [RecordLine], chainKey: (key: SymmetricKey?, from: Int)?, _ problems: inout [String]
    ) -> Chain {
        var chain = Chain()
        var expectedSequence = 1
        var previousHash = AuditFormat.zeroHash
        for (file, lineNumber, bytes) in lines.map({ ($0.file, $0.lineNumber, $0.bytes) }) {
            guard let line = AuditFormat.parse(bytes) else {
                problems.append("\(file) line \(lineNumber): not a JSON object")
                continue
            }
            guard let sequence = AuditFormat.integer(line["sequence"]), let stated = AuditFormat.string(line["hash"]),
                let statedPrevious = AuditFormat.string(line["previousHash"]), let record = line["record"]
            else {
                problems.append("\(file) line \(lineNumber): missing or malformed sequence, hash, previousHash or record")
                continue
            }
            let place = "\(file) line \(lineNumber) (sequence \(sequence))"
            if line.count != 4 {
                problems.append("\(place): unexpected members \(line.keys.filter { !["sequence", "hash", "previousHash", "record"].contains($0) }.sorted())")
            }
            if sequence != expectedSequence {
                let why = sequence > expectedSequence
                    ? (lineNumber == 1 ? "records are missing: the records file before this one, or this file's first lines" : "records are missing")
                    : "records are repeated or out of order"
                problems.append("\(place): sequence \(sequence) where \(expectedSequence) was expected (\(why))")
            }
            if statedPrevious != previousHash {
                problems.append("\(place): previousHash does not match the hash of the line before (hash chain broken)")
            }
            let keyed = chainKey.map { sequence >= $0.from } ?? false
            if keyed && chainKey?.key == nil {
                // Reported once, with the key file.
            } else if AuditFormat.chainHash(previousHash: statedPrevious, recordBytes: record.canonicalBytes, key: keyed ? chainKey?.key : nil)
                != stated
            {
                problems.append("\(place): hash does not match the record (record altered, or the chain recomputed without its key)")
            }
            if chain.hashes[sequence] == nil { chain.hashes[sequence] = stated }
            chain.lastSequence = sequence
            // Carry on from what this line states, so one damaged line is reported once, not on every line after it.
            expectedSequence = sequence + 1
            previousHash = stated
        }
        return chain
    }

    private static func verifyDigests(
        _ lines: [ArraySlice<UInt8>], chain: Chain, chainKeyFrom: Int?, signer: any AuditDigestSigner, _ problems: inout [String]
    ) async throws {
        let file = AuditFormat.digestsFileName
        var expectedFirst = 1
        var previousDigestHash = AuditFormat.zeroHash
        for (index, bytes) in lines.enumerated() {
            let lineNumber = index + 1
            guard var digest = AuditFormat.parse(bytes) else {
                problems.append("\(file) line \(lineNumber): not a JSON object")
                previousDigestHash = AuditFormat.sha256Hex(Array(bytes))
                continue
            }
            let lineHash = AuditFormat.sha256Hex(JSONValue.object(digest).canonicalBytes)
            defer { previousDigestHash = lineHash }
            guard let first = AuditFormat.integer(digest["firstSequence"]), let last = AuditFormat.integer(digest["lastSequence"]),
                let lastHash = AuditFormat.string(digest["lastHash"]), AuditFormat.string(digest["digestTime"]) != nil,
                let statedPrevious = AuditFormat.string(digest["previousDigestHash"]),
                let signatureText = AuditFormat.string(digest.removeValue(forKey: "signature"))
            else {
                problems.append("\(file) line \(lineNumber): missing or malformed members")
                continue
            }
            let place = "\(file) line \(lineNumber) (sequences \(first)...\(last))"
            let statedKeyFrom = digest["chainKeyFrom"].map(AuditFormat.integer)
            if digest.count != (statedKeyFrom == nil ? 5 : 6) || statedKeyFrom == .some(nil) {
                problems.append("\(place): unexpected members")
            }
            switch (statedKeyFrom ?? nil, chainKeyFrom) {
            case (let stated?, let actual?) where stated != actual:
                problems.append("\(place): chainKeyFrom \(stated) but \(AuditFormat.chainKeyFileName) starts at \(actual) (the key file was replaced)")
            case (_?, nil):
                problems.append("\(place): signed with a chain key, but \(AuditFormat.chainKeyFileName) is missing (deleted)")
            case (nil, let actual?) where last >= actual:
                problems.append("\(place): covers records chained with the key but does not name it (digest altered)")
            default:
                break
            }
            if statedPrevious != previousDigestHash {
                problems.append("\(place): previousDigestHash does not match the digest line before (a digest is missing or altered)")
            }
            if first != expectedFirst {
                problems.append("\(place): firstSequence \(first) where \(expectedFirst) was expected (digests missing or out of order)")
            }
            if last < first {
                problems.append("\(place): lastSequence is before firstSequence")
            }
            if last > chain.lastSequence {
                problems.append(
                    "\(place): covers records through sequence \(last) but \(AuditFormat.recordsFileName) ends at sequence "
                        + "\(chain.lastSequence) (records deleted from the end)")
            } else if let recorded = chain.hashes[last] {
                if recorded != lastHash {
                    problems.append("\(place): lastHash does not match the hash of record \(last)")
                }
            } else {
                problems.append("\(place): \(AuditFormat.recordsFileName) has no record with sequence \(last)")
            }
            let signature = Data(base64Encoded: signatureText).map { Array($0) }
            if let signature, try await signer.verify(JSONValue.object(digest).canonicalBytes, signature: signature) {
                // Signed by the token.
            } else {
                problems.append("\(place): signature does not verify (digest altered or forged)")
            }
            expectedFirst = last + 1
        }
    }
}
