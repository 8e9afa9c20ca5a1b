import Crypto
import Foundation
import GRDB
import KMS
@testable import KMSHSM
import KMSSQLite
import Logging
import PKCS11
import Testing
import TrentTestSupport

/// Asymmetric keys keep design §2's promises: the private key is in the store only wrapped, and a wrapped
/// private key, public key and binding cannot be moved to another key.
@Suite struct KeyPairTests {
    let hsm: TestHSM
    let caller = ServiceFixture.caller
    init() throws { hsm = try TestHSM.shared() }

    @Test func thePrivateKeyIsStoredOnlyWrapped() async throws {
        let fixture = try await hsm.makeService()
        let key = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "RSA_2048"), caller: caller)
        let record = try #require(try await fixture.store.backingKey(key.id, version: 1))
        let publicKey = try #require(record.publicKey)
        #expect(try AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: publicKey) != nil)

        // Unwrapped here readable, with the domain key Trent holds, to learn what must not be on disk.
        let domainKey = try #require(try TokenKeys.find(in: hsm.token, label: TestHSM.domainKeyLabel))
        let rfc5649Name = try #require(hsm.profile.keyWrap.rfc5649)
        let rfc5649 = try #require(MechanismType(name: rfc5649Name))
        let privateExponent = try hsm.token.withSession { session throws(PKCS11Error) -> [UInt8] in
            let handle = try session.unwrapKey(record.wrappedKey, with: domainKey, mechanism: .keyWrap(rfc5649), template: [
                .objectClass(.privateKey), .keyType(.rsa), Attribute(.token, false), Attribute(.sensitive, false), Attribute(.extractable, true),
            ])
            defer { try? session.destroyObject(handle) }
            return try session.attribute(.privateExponent, of: handle).value
        }
        #expect(privateExponent.count >= 255)
        // A wrapped private key spills onto overflow pages, so the search is by 16-byte pieces.
        let bytes = fixture.databaseBytes()
        #expect(bytes.containsSequence(Array(record.wrappedKey.prefix(16))), "the search must find what is stored: the EKT")
        for start in stride(from: 0, to: privateExponent.count - 16, by: 16) {
            #expect(!bytes.containsSequence(Array(privateExponent[start..<start + 16])), "private exponent bytes \(start)...")
        }
    }

    @Test func aKeyPairMovedOntoAnotherKeysRowIsRefused() async throws {
        let fixture = try await hsm.makeService()
        let a = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "RSA_2048"), caller: caller)
        let b = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "RSA_2048"), caller: caller)
        let database = try DatabaseQueue(path: fixture.databasePath)
        try await database.write { db in
            try db.execute(sql: """
                UPDATE backing_keys SET wrapped_key = (SELECT wrapped_key FROM backing_keys WHERE key_id = ?),
                binding = (SELECT binding FROM backing_keys WHERE key_id = ?),
                public_key = (SELECT public_key FROM backing_keys WHERE key_id = ?) WHERE key_id = ?
                """, arguments: [a.id.description, a.id.description, a.id.description, b.id.description])
        }
        let restarted = try await hsm.makeService(databasePath: fixture.databasePath)
        await #expect {
            _ = try await restarted.service.sign(
                keyID: b.id.description, message: [1], messageType: nil, algorithm: "RSASSA_PSS_SHA_256", dryRun: nil, caller: caller)
        } throws: { error in
            (error as? KMSError)?.code == .internalFailure
        }
        _ = try await restarted.service.sign(
            keyID: a.id.description, message: [1], messageType: nil, algorithm: "RSASSA_PSS_SHA_256", dryRun: nil, caller: caller)
    }

    /// Raw RSA (`CKM_RSA_X_509`) is allowed on an RSA private key only where the profile says the token's OAEP lacks
    /// a hash Trent needs (SoftHSM: SHA-256); on a token with both hashes the token itself refuses raw RSA with it.
    @Test(
        .enabled(if: KeyPairTests.tokenEnforcesAllowedMechanisms, "only a token that enforces CKA_ALLOWED_MECHANISMS can show it"),
        arguments: [["SHA-1"], ["SHA-1", "SHA-256"]])
    func rawRSAIsAllowedOnlyWhereTheProfileNeedsIt(digests: [String]) async throws {
        var profile = hsm.profile
        profile.rsaOAEPDigests = digests
        let provider = try PKCS11KeyProvider(
            token: hsm.token, configuration: .init(keyLabels: TestHSM.keyLabels, profile: profile), threadPool: hsm.threadPool,
            logger: Logger(label: "trent.tests"))
        let fixture = try await hsm.makeService(provider: provider)
        let key = try await fixture.service.createKey(.init(keyUsage: "ENCRYPT_DECRYPT", keySpec: "RSA_2048"), caller: caller)
        let record = try #require(try await fixture.store.backingKey(key.id, version: 1))
        let block = [0x00] + [UInt8](repeating: 0x42, count: 255)
        let raw: Result<[UInt8], PKCS11Error> = try await provider.withWorkingKey(record, kind: .keyPair(.rsa2048), "decrypt raw") {
            session, handle throws(PKCS11Error) in
            do throws(PKCS11Error) {
                return .success(try session.decrypt(block, key: handle, mechanism: .rsaRaw))
            } catch {
                return .failure(error)
            }
        }
        if profile.needsRawRSA {
            #expect(throws: Never.self) { try raw.get() }
        } else {
            #expect(throws: PKCS11Error.self) { try raw.get() }
        }
        // What the profile claims for SHA-1 holds either way: RSAES_OAEP_SHA_1 round-trips.
        let encrypted = try await fixture.service.encrypt(
            keyID: key.id.description, plaintext: [7, 7, 7], context: .init(), algorithm: "RSAES_OAEP_SHA_1", dryRun: nil, caller: caller)
        let decrypted = try await fixture.service.decrypt(
            ciphertext: encrypted.ciphertextBlob, context: .init(), keyID: key.id.description, algorithm: "RSAES_OAEP_SHA_1", dryRun: nil,
            caller: caller)
        #expect(decrypted.plaintext == [7, 7, 7])
    }

    static var tokenEnforcesAllowedMechanisms: Bool { (try? TestHSM.shared().profile.allowedMechanisms.enforced) ?? false }

    @Test func oaepDecodingUndoesEncodingAndRefusesAnyChange() {
        for digest in [DigestAlgorithm.sha1, .sha256] {
            let message = Array("attack at dawn".utf8)
            let seed = [UInt8](repeating: 0x5A, count: digest.length)
            let encoded = AsymmetricEncoding.oaepEncode(message, modulusLength: 256, seed: seed, digest)
            #expect(encoded.count == 256)
            #expect(AsymmetricEncoding.oaepDecode(encoded, modulusLength: 256, digest) == message)
            for index in [0, 1, 40, 200, 255] {
                var tampered = encoded
                tampered[index] ^= 0x01
                #expect(AsymmetricEncoding.oaepDecode(tampered, modulusLength: 256, digest) == nil, "byte \(index)")
            }
        }
    }

    @Test func derReadingIsStrict() throws {
        let signature = AsymmetricEncoding.derSignature(fromRaw: [0x00, 0x80] + [UInt8](repeating: 1, count: 30) + [UInt8](repeating: 2, count: 32))
        let raw = try AsymmetricEncoding.rawSignature(fromDER: signature, fieldLength: 32)
        #expect(raw.count == 64 && raw[1] == 0x80)
        #expect(throws: DER.Malformed.self) { _ = try AsymmetricEncoding.rawSignature(fromDER: signature + [0], fieldLength: 32) }
        // INTEGER 1 with a needless leading zero, and a long-form length that fits the short form.
        #expect(throws: DER.Malformed.self) { _ = try AsymmetricEncoding.rawSignature(fromDER: [0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01], fieldLength: 32) }
        #expect(throws: DER.Malformed.self) { _ = try AsymmetricEncoding.rawSignature(fromDER: [0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], fieldLength: 32) }
        // A negative r.
        #expect(throws: DER.Malformed.self) { _ = try AsymmetricEncoding.rawSignature(fromDER: [0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01], fieldLength: 32) }
    }

    @Test func publicKeysRoundTripThroughSubjectPublicKeyInfo() throws {
        let key = P256.Signing.PrivateKey().publicKey
        let parsed = try AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: Array(key.derRepresentation))
        #expect(parsed == .ec(curve: AsymmetricEncoding.p256.parameters, point: Array(key.x963Representation)))
        #expect(AsymmetricEncoding.subjectPublicKeyInfo(parsed) == Array(key.derRepresentation))
    }
}
