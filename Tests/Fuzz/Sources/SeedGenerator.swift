import Foundation
@testable import JSON
@testable import KMS
@testable import KMSAudit
@testable import KMSHSM
@testable import KMSProtocol

/// Writes the seeds that are easier made by Trent's own code than by hand (`TrentFuzz --generate-seeds <dir>`):
/// audit trails signed by the stand-in signer (intact, so the fuzzer starts past every check), and import
/// tokens. The other seeds come from Tests/Fuzz/tools/make_seeds.py (botocore and cryptography) or by hand.
enum SeedGenerator {
    static func write(into root: URL) {
        func save(_ target: String, _ name: String, _ bytes: [UInt8]) {
            let directory = root.appendingPathComponent(target)
            try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let url = directory.appendingPathComponent(name)
            guard (try? Data(bytes).write(to: url)) != nil else { fatalError("cannot write \(url.path)") }
            print("wrote \(url.path) (\(bytes.count) bytes)")
        }

        // Audit trails: keyed from the first record, keyed from the third (two records from before chain keys),
        // and without a chain key at all.
        for (name, keyFrom) in [("gen-keyed-trail", 1 as Int?), ("gen-key-from-3", 3), ("gen-unkeyed-trail", nil)] {
            let trail = auditTrail(records: 5, digestAfter: [2, 5], chainKeyFrom: keyFrom)
            AuditTarget.run(trail)
            let report = verify(trail)
            check(report.isIntact, "the generated trail \(name) is not intact: \(report.problems)")
            save("audit", name, trail)
        }

        // Import tokens as GetParametersForImport seals them (their content).
        let publicKey = AsymmetricEncoding.subjectPublicKeyInfo(
            .rsa(modulus: [0xC3] + [UInt8](repeating: 0x5A, count: 255), exponent: [0x01, 0x00, 0x01]))
        for (index, (algorithm, spec)) in [(WrappingAlgorithm.oaepSHA256, KeyPairSpec.rsa2048), (.rsaAESKeyWrapSHA1, .rsa3072)].enumerated() {
            let token = ImportToken(
                keyID: KeyID(UUID(uuidString: "1234ABCD-12AB-34CD-56EF-1234567890AB")!), algorithm: algorithm,
                wrappingKey: ImportWrappingKey(spec: spec, wrappedPrivateKey: (0..<1232).map { UInt8(truncatingIfNeeded: $0 &* 31) }, publicKey: publicKey),
                validTo: Date(timeIntervalSince1970: 1_795_448_546))
            // In canonical form: JSONEncoder's member order is not stable from run to run.
            save("import-token", "gen-token-\(index + 1)", try! JSONValue.parse(try! token.encoded()).canonicalBytes)
        }
    }

    static func verify(_ trail: [UInt8]) -> AuditVerificationReport {
        AuditTarget.run(trail)
        return runBlocking { try! await AuditVerifier.verify(directory: AuditTarget.directory, signer: StandInSigner()) }
    }

    static let chainKey = (0..<32).map { UInt8($0 &* 7 &+ 3) }

    /// records.jsonl, 0x00, digests.jsonl, and (with a chain key) 0x00, chain-key.json: the audit target's input.
    static func auditTrail(records count: Int, digestAfter: [Int], chainKeyFrom: Int?) -> [UInt8] {
        var records: [UInt8] = []
        var digests: [UInt8] = []
        var previousHash = AuditFormat.zeroHash
        var previousDigestHash = AuditFormat.zeroHash
        var digested = 0
        for sequence in 1...count {
            let record = sampleRecord(sequence).canonicalBytes
            let message = Array(previousHash.utf8) + record
            let hash: String
            if let from = chainKeyFrom, sequence >= from {
                hash = SigV4Target.hmacSHA256(key: chainKey, message).hexString
            } else {
                hash = SigV4Target.sha256(message).hexString
            }
            records += AuditFormat.recordLine(sequence: sequence, previousHash: previousHash, hash: hash, recordBytes: record)
            previousHash = hash
            if digestAfter.contains(sequence) {
                var digest: [String: JSONValue] = [
                    "digestTime": "2026-11-23T15:42:26Z", "firstSequence": .number(Double(digested + 1)), "lastSequence": .number(Double(sequence)),
                    "lastHash": .string(hash), "previousDigestHash": .string(previousDigestHash),
                ]
                // A digest names the chain key once the trail has one (a trail that got its key at sequence 3 had none
                // when it digested 1...2).
                if let from = chainKeyFrom, sequence >= from { digest["chainKeyFrom"] = .number(Double(from)) }
                let unsigned = JSONValue.object(digest).canonicalBytes
                let signature = runBlocking { try! await StandInSigner().sign(unsigned) }
                digest["signature"] = .string(Data(signature).base64EncodedString())
                let line = JSONValue.object(digest).canonicalBytes
                digests += line + [AuditFormat.newline]
                previousDigestHash = AuditFormat.sha256Hex(line)
                digested = sequence
            }
        }
        var trail = records + [0] + digests
        if let from = chainKeyFrom {
            let sealed = runBlocking { try! await StandInSigner().sealChainKey(chainKey) }
            trail += [0] + AuditFormat.ChainKeyFile(firstSequence: from, sealedKey: sealed).bytes
        }
        return trail
    }

    /// CloudTrail records of a few kinds: an authenticated Encrypt with a context, a refused request, a CreateKey.
    static func sampleRecord(_ sequence: Int) -> CloudTrailRecord {
        let caller = Caller(
            accountID: "111122223333", principalARN: "arn:aws:iam::111122223333:user/alice", accessKeyID: "AKIDEXAMPLE", sourceIP: "192.0.2.10",
            userAgent: "aws-cli/2.15.0")
        let requests: [(String, JSONValue?, KMSError?)] = [
            ("Encrypt", ["KeyId": "alias/demo", "Plaintext": "aGVsbG8=", "EncryptionContext": ["purpose": "demo"]], nil),
            ("Decrypt", ["CiphertextBlob": "AQID"], KMSError(.invalidCiphertext, "The ciphertext is invalid or was not produced by this service.")),
            ("CreateKey", ["Description": "my first key", "KeyUsage": "ENCRYPT_DECRYPT", "Tags": [["TagKey": "team", "TagValue": "a"]]], nil),
            ("DescribeKey", ["KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "GrantTokens": ["secret"]], nil),
            ("ListKeys", nil, KMSError(.unrecognizedClient, "The security token included in the request is invalid.")),
        ]
        let (operation, request, error) = requests[(sequence - 1) % requests.count]
        let authenticated = error?.code != .unrecognizedClient
        return CloudTrailRecord(
            operation: operation, requestID: "7b3e5c1a-0000-4000-8000-\(String(repeating: "0", count: 11))\(sequence % 10)",
            eventID: "9d1f0b2c-0000-4000-8000-\(String(repeating: "0", count: 11))\(sequence % 10)",
            eventTime: Date(timeIntervalSince1970: 1_795_448_546 + Double(sequence)), region: "us-east-1", caller: authenticated ? caller : nil,
            claimedAccessKeyID: authenticated ? nil : "AKIDUNKNOWN", sourceIP: "192.0.2.10", userAgent: "aws-cli/2.15.0",
            request: authenticated ? request : nil, response: error == nil && operation == "CreateKey" ? ["KeyMetadata": ["KeyId": "k"]] : JSONValue?.none,
            error: error,
            resources: authenticated
                ? [AuditResources.Resource(arn: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", accountID: "111122223333")]
                : [])
    }
}
