import Foundation
import GRDB
import KMS
@testable import KMSHSM
import KMSSQLite
import PKCS11
import Testing
import TrentTestSupport

/// The key hierarchy of design §2, proven through PKCS#11 itself and through the bytes of the SQLite file.
@Suite struct KeyHierarchyTests {
    let hsm: TestHSM
    let caller = ServiceFixture.caller
    init() throws { hsm = try TestHSM.shared() }

    @Test func theDomainKeyNeverLeavesTheToken() throws {
        let domainKey = try #require(try TokenKeys.find(in: hsm.token, label: TestHSM.domainKeyLabel))
        try hsm.token.withSession { session throws(PKCS11Error) in
            #expect(try session.attribute(.sensitive, of: domainKey).boolValue == true)
            #expect(try session.attribute(.extractable, of: domainKey).boolValue == false)
            #expect(try session.attribute(.neverExtractable, of: domainKey).boolValue == true)
            #expect(try session.attribute(.alwaysSensitive, of: domainKey).boolValue == true)
            #expect(try session.attribute(.token, of: domainKey).boolValue == true)
            #expect(try session.attribute(.encrypt, of: domainKey).boolValue == false)
            #expect(try session.attribute(.derive, of: domainKey).boolValue == false)
            #expect(throws: PKCS11Error(.attributeSensitive, in: .getAttributeValue)) {
                _ = try session.attribute(.value, of: domainKey)
            }
        }
    }

    /// Nor can it be wrapped out under another key, where the token enforces CKA_EXTRACTABLE; the profile says
    /// whether it does, and this test holds the profile to it.
    @Test func theDomainKeyCannotBeWrappedOutWhereTheProfileSaysSo() throws {
        let domainKey = try #require(try TokenKeys.find(in: hsm.token, label: TestHSM.domainKeyLabel))
        let enforced = hsm.profile.enforcesNonExtractable
        try hsm.token.withSession { session throws(PKCS11Error) in
            let other = try session.generateKey(.aesKeyGen, template: [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32), Attribute(.token, false), Attribute(.wrap, true),
            ])
            defer { try? session.destroyObject(other) }
            if enforced {
                #expect(throws: PKCS11Error(.keyUnextractable, in: .wrapKey)) {
                    _ = try session.wrapKey(domainKey, with: other, mechanism: .aesKeyWrap)
                }
            } else {
                // NSS softoken (profile: enforcesNonExtractable false) wraps it: the profile's warning is true.
                #expect(try session.wrapKey(domainKey, with: other, mechanism: .aesKeyWrap).count == 40)
            }
        }
    }

    @Test func creatingTheTokenKeysTwiceKeepsTheFirst() throws {
        #expect(try TokenKeys.ensure(in: hsm.token, labels: TestHSM.keyLabels, profile: hsm.profile).isEmpty)
    }

    @Test func theSealingKeyOnlyDoesGCMAndNeverLeaves() throws {
        let sealingKey = try #require(try TokenKeys.find(in: hsm.token, label: TestHSM.keyLabels.sealingKey))
        let enforced = hsm.profile.allowedMechanisms.enforced
        try hsm.token.withSession { session throws(PKCS11Error) in
            #expect(try session.attribute(.neverExtractable, of: sealingKey).boolValue == true)
            #expect(try session.attribute(.wrap, of: sealingKey).boolValue == false)
            #expect(throws: PKCS11Error(.attributeSensitive, in: .getAttributeValue)) { _ = try session.attribute(.value, of: sealingKey) }
            // CKA_ALLOWED_MECHANISMS keeps it to AES-GCM (no ECB oracle) where the token enforces it, as its profile says.
            let ecb = Result { () throws(PKCS11Error) in
                try session.encrypt(Array(repeating: 0, count: 16), key: sealingKey, mechanism: .keyWrap(.aesECB))
            }
            if enforced {
                #expect(throws: PKCS11Error.self) { try ecb.get() }
            } else {
                // NSS softoken does not even store CKA_ALLOWED_MECHANISMS on token keys: Trent does not set it there.
                #expect(throws: Never.self) { try ecb.get() }
            }
        }
    }

    @Test func sealedSecretsOpenOnlyWithTheirAdditionalData() async throws {
        let provider = try hsm.makeProvider()
        let sealed = try await provider.seal(Array("secret".utf8), additionalData: Array("akid-1".utf8))
        #expect(try await provider.unseal(sealed, additionalData: Array("akid-1".utf8)) == Array("secret".utf8))
        await #expect { _ = try await provider.unseal(sealed, additionalData: Array("akid-2".utf8)) } throws: {
            ($0 as? KMSError)?.code == .invalidCiphertext
        }
    }

    /// Obtains a backing key's plaintext the only way the token allows: unwrapping its EKT under the domain
    /// key into an extractable object, as a holder of the PIN could. The service itself never does this.
    func backingKeyBytes(_ record: BackingKeyRecord) throws -> [UInt8] {
        let domainKey = try #require(try TokenKeys.find(in: hsm.token, label: TestHSM.domainKeyLabel))
        return try hsm.token.withSession { session throws(PKCS11Error) in
            let key = try session.unwrapKey(record.wrappedKey, with: domainKey, mechanism: .aesKeyWrap, template: [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.token, false), Attribute(.sensitive, false), Attribute(.extractable, true),
            ])
            defer { try? session.destroyObject(key) }
            return try session.attribute(.value, of: key).value
        }
    }

    @Test func noPlaintextKeyIsEverWrittenToTheStore() async throws {
        let fixture = try await hsm.makeService()
        let key = try await fixture.service.createKey(.init(description: "bytes on disk"), caller: caller)
        let dataKey = try await fixture.service.generateDataKey(
            keyID: key.id.description, keySpec: "AES_256", numberOfBytes: nil, context: EncryptionContext(["purpose": "test"]),
            includePlaintext: true, dryRun: nil, caller: caller)
        let plaintext = Array("a secret that must not reach the disk".utf8)
        _ = try await fixture.service.encrypt(
            keyID: key.id.description, plaintext: plaintext, context: EncryptionContext(), algorithm: nil, dryRun: nil, caller: caller)
        let record = try #require(try await fixture.store.backingKey(key.id, version: 1))
        let backingKey = try backingKeyBytes(record)
        #expect(backingKey.count == 32)

        let bytes = fixture.databaseBytes()
        #expect(bytes.containsSequence(record.wrappedKey), "the search must find what is stored: the EKT")
        #expect(!bytes.containsSequence(backingKey))
        #expect(!bytes.containsSequence(try #require(dataKey.plaintext)))
        #expect(!bytes.containsSequence(plaintext))
    }

    @Test func anEKTCopiedOntoAnotherKeysRowIsRefused() async throws {
        let fixture = try await hsm.makeService()
        let a = try await fixture.service.createKey(.init(), caller: caller)
        let b = try await fixture.service.createKey(.init(), caller: caller)
        let blob = try await fixture.service.encrypt(
            keyID: b.id.description, plaintext: [1, 2, 3], context: EncryptionContext(), algorithm: nil, dryRun: nil, caller: caller)

        // Swap the whole wrapped backing key of A (EKT and its binding) onto B's row.
        let database = try DatabaseQueue(path: fixture.databasePath)
        try await database.write { db in
            try db.execute(sql: """
                UPDATE backing_keys SET wrapped_key = (SELECT wrapped_key FROM backing_keys WHERE key_id = ?),
                binding = (SELECT binding FROM backing_keys WHERE key_id = ?) WHERE key_id = ?
                """, arguments: [a.id.description, a.id.description, b.id.description])
        }
        // A fresh provider has no working copy cached, so it must load B's backing key from the store.
        let restarted = try await hsm.makeService(databasePath: fixture.databasePath)
        await #expect {
            _ = try await restarted.service.encrypt(
                keyID: b.id.description, plaintext: [1], context: EncryptionContext(), algorithm: nil, dryRun: nil, caller: caller)
        } throws: { error in
            (error as? KMSError)?.code == .internalFailure
        }
        await #expect {
            _ = try await restarted.service.decrypt(
                ciphertext: blob.ciphertextBlob, context: EncryptionContext(), keyID: nil, algorithm: nil, dryRun: nil, caller: caller)
        } throws: { error in
            (error as? KMSError)?.code == .internalFailure
        }
        // A's own row still works.
        _ = try await restarted.service.encrypt(
            keyID: a.id.description, plaintext: [1], context: EncryptionContext(), algorithm: nil, dryRun: nil, caller: caller)
    }

    /// The attack a self-made HMAC binding allowed: GenerateMac on key A computes "A's proof for B" (an HMAC of B's
    /// binding data), so with write access to the store A's EKT and that proof could be put on B's row. A binding made
    /// by the sealing key cannot be computed through the API.
    @Test func anHMACKeyCannotForgeTheBindingOfAnother() async throws {
        let fixture = try await hsm.makeService()
        let a = try await fixture.service.createKey(.init(keyUsage: "GENERATE_VERIFY_MAC", keySpec: "HMAC_256"), caller: caller)
        let b = try await fixture.service.createKey(.init(keyUsage: "GENERATE_VERIFY_MAC", keySpec: "HMAC_256"), caller: caller)
        let forged = try await fixture.service.generateMac(
            keyID: a.id.description, message: PKCS11KeyProvider.bindingData(b.id, 1), algorithm: "HMAC_SHA_256", dryRun: nil, caller: caller)
        let database = try DatabaseQueue(path: fixture.databasePath)
        try await database.write { db in
            try db.execute(
                sql: "UPDATE backing_keys SET wrapped_key = (SELECT wrapped_key FROM backing_keys WHERE key_id = ?), binding = ? WHERE key_id = ?",
                arguments: [a.id.description, Data(forged.mac), b.id.description])
        }
        let restarted = try await hsm.makeService(databasePath: fixture.databasePath)
        await #expect {
            _ = try await restarted.service.generateMac(keyID: b.id.description, message: [1], algorithm: "HMAC_SHA_256", dryRun: nil, caller: caller)
        } throws: { error in
            (error as? KMSError)?.code == .internalFailure
        }
        // Nor does A's own sealed binding, copied along with its EKT, open for B.
        try await database.write { db in
            try db.execute(
                sql: "UPDATE backing_keys SET binding = (SELECT binding FROM backing_keys WHERE key_id = ?) WHERE key_id = ?",
                arguments: [a.id.description, b.id.description])
        }
        let again = try await hsm.makeService(databasePath: fixture.databasePath)
        await #expect {
            _ = try await again.service.generateMac(keyID: b.id.description, message: [1], algorithm: "HMAC_SHA_256", dryRun: nil, caller: caller)
        } throws: { error in
            (error as? KMSError)?.code == .internalFailure
        }
        _ = try await again.service.generateMac(keyID: a.id.description, message: [1], algorithm: "HMAC_SHA_256", dryRun: nil, caller: caller)
    }

    /// A store written before sealing-key bindings: its secret backing keys carry the proof the key made itself. The
    /// upgrade lists them once (a migration), the service checks each proof in the token and rebinds it; a key whose
    /// proof does not hold stays unusable, and nothing bound the earlier way is accepted afterwards.
    @Test func keysBoundTheEarlierWayAreCarriedOverOnce() async throws {
        let fixture = try await hsm.makeService()
        let aes = try await fixture.service.createKey(.init(), caller: caller)
        let hmac = try await fixture.service.createKey(.init(keyUsage: "GENERATE_VERIFY_MAC", keySpec: "HMAC_384"), caller: caller)
        let broken = try await fixture.service.createKey(.init(), caller: caller)
        let blob = try await fixture.service.encrypt(
            keyID: aes.id.description, plaintext: [4, 2], context: EncryptionContext(), algorithm: nil, dryRun: nil, caller: caller)
        let mac = try await fixture.service.generateMac(keyID: hmac.id.description, message: [1], algorithm: "HMAC_SHA_384", dryRun: nil, caller: caller)

        // Rewrite the bindings the way earlier versions made them, with each key itself, and undo the migration.
        func legacyProof(_ id: KeyID, _ kind: BackingKeyKind) async throws -> [UInt8] {
            let record = try #require(try await fixture.store.backingKey(id, version: 1))
            let data = PKCS11KeyProvider.bindingData(id, 1)
            return try await fixture.provider.withWorkingKey(record, kind: kind, "legacy proof") { session, handle, _ in
                switch kind {
                case .hmac(let algorithm): return try session.sign(data, key: handle, mechanism: .hmac(algorithm.mechanism))
                default:
                    let (iv, proof) = try session.sealGCM(PKCS11KeyProvider.bindingPlaintext, key: handle, additionalData: data)
                    return iv + proof
                }
            }
        }
        let proofs = [
            (aes.id, try await legacyProof(aes.id, .aes256)), (hmac.id, try await legacyProof(hmac.id, .hmac(.hmacSHA384))),
            (broken.id, Array(try await legacyProof(broken.id, .aes256).reversed())),
        ]
        let database = try DatabaseQueue(path: fixture.databasePath)
        try await database.write { db in
            for (id, proof) in proofs {
                try db.execute(sql: "UPDATE backing_keys SET binding = ? WHERE key_id = ?", arguments: [Data(proof), id.description])
            }
            try db.execute(sql: "DROP TABLE legacy_bindings; DELETE FROM grdb_migrations WHERE identifier = 'sealed-bindings'")
        }

        // Before the carry-over, a key bound the earlier way is refused.
        let upgraded = try await hsm.makeService(databasePath: fixture.databasePath)
        await #expect {
            _ = try await upgraded.service.encrypt(keyID: aes.id.description, plaintext: [1], context: EncryptionContext(), algorithm: nil, dryRun: nil, caller: caller)
        } throws: { ($0 as? KMSError)?.code == .internalFailure }
        let outcome = try await upgraded.service.carryOverLegacyBindings()
        #expect(outcome.carried == 2 && outcome.refused == 1)
        #expect(try await upgraded.store.legacyBoundBackingKeys().isEmpty)
        #expect(try await upgraded.service.carryOverLegacyBindings() == (0, 0))

        let restarted = try await hsm.makeService(databasePath: fixture.databasePath)
        let opened = try await restarted.service.decrypt(
            ciphertext: blob.ciphertextBlob, context: EncryptionContext(), keyID: nil, algorithm: nil, dryRun: nil, caller: caller)
        #expect(opened.plaintext == [4, 2])
        let verified = try await restarted.service.verifyMac(
            keyID: hmac.id.description, message: [1], mac: mac.mac, algorithm: "HMAC_SHA_384", dryRun: nil, caller: caller)
        #expect(verified.mac == mac.mac)
        await #expect {
            _ = try await restarted.service.encrypt(keyID: broken.id.description, plaintext: [1], context: EncryptionContext(), algorithm: nil, dryRun: nil, caller: caller)
        } throws: { ($0 as? KMSError)?.code == .internalFailure }
    }

    @Test func theNonceBudgetMovesTheKeyToFreshBackingKeys() async throws {
        let budget: UInt64 = 5
        let fixture = try await hsm.makeService(nonceBudget: budget, reservationBlock: 2)
        let key = try await fixture.service.createKey(.init(), caller: caller)
        var blobs: [[UInt8]] = []
        for index in 0..<23 {
            let result = try await fixture.service.encrypt(
                keyID: key.id.description, plaintext: [UInt8(index)], context: EncryptionContext(["n": "\(index)"]),
                algorithm: nil, dryRun: nil, caller: caller)
            blobs.append(result.ciphertextBlob)
        }
        let versions = try blobs.map { try CiphertextBlob(parsing: $0, region: "us-east-1").backingKeyVersion }
        let uses = Dictionary(grouping: versions, by: { $0 }).mapValues(\.count)
        #expect(uses.values.allSatisfy { UInt64($0) <= budget }, "no backing key exceeds its budget: \(uses)")
        #expect(uses.keys.sorted() == [1, 2, 3, 4, 5])
        for version in 1...5 {
            let record = try #require(try await fixture.store.backingKey(key.id, version: UInt32(version)))
            #expect(record.noncesReserved <= budget)
        }
        #expect(try await fixture.store.key(key.id)?.currentVersion == 5)
        for (index, blob) in blobs.enumerated() {
            let opened = try await fixture.service.decrypt(
                ciphertext: blob, context: EncryptionContext(["n": "\(index)"]), keyID: nil, algorithm: nil, dryRun: nil, caller: caller)
            #expect(opened.plaintext == [UInt8(index)])
        }
    }

    /// After a restart, whatever budget was reserved before counts as spent: no IV budget is ever reused.
    @Test func aRestartNeverReusesReservedBudget() async throws {
        let fixture = try await hsm.makeService(nonceBudget: 4, reservationBlock: 3)
        let key = try await fixture.service.createKey(.init(), caller: caller)
        _ = try await fixture.service.encrypt(keyID: key.id.description, plaintext: [1], context: .init(), algorithm: nil, dryRun: nil, caller: caller)
        #expect(try await fixture.store.backingKey(key.id, version: 1)?.noncesReserved == 3)
        let restarted = try await hsm.makeService(nonceBudget: 4, reservationBlock: 3, databasePath: fixture.databasePath)
        let versions = try await (0..<3).asyncMap { _ in
            try CiphertextBlob(parsing: try await restarted.service.encrypt(
                keyID: key.id.description, plaintext: [1], context: .init(), algorithm: nil, dryRun: nil, caller: caller).ciphertextBlob, region: "us-east-1").backingKeyVersion
        }
        // Version 1 had 3 of 4 reserved before the restart: one encryption left, then version 2.
        #expect(versions == [1, 2, 2])
    }

    @Test func aSmallHandleCacheStillServesEveryKey() async throws {
        let provider = try hsm.makeProvider(ownConnection: true, handleCacheCapacity: 2)
        let fixture = try await hsm.makeService(provider: provider)
        var keys: [KeyRecord] = []
        for _ in 0..<6 { keys.append(try await fixture.service.createKey(.init(), caller: caller)) }
        for _ in 0..<2 {
            for key in keys {
                let blob = try await fixture.service.encrypt(
                    keyID: key.id.description, plaintext: [7], context: .init(), algorithm: nil, dryRun: nil, caller: caller)
                let opened = try await fixture.service.decrypt(
                    ciphertext: blob.ciphertextBlob, context: .init(), keyID: nil, algorithm: nil, dryRun: nil, caller: caller)
                #expect(opened.plaintext == [7])
            }
        }
        #expect(provider.cachedKeyCount <= 2)
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
