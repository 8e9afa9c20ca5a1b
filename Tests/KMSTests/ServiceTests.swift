import Foundation
import KMS
import KMSSQLite
import Testing
import TrentTestSupport

/// KMS semantics through the service, on SoftHSM and SQLite: key states, the deletion window with an
/// injected clock, identifiers, encryption context and restarts.
@Suite struct ServiceTests {
    let hsm: TestHSM
    let caller = ServiceFixture.caller
    init() throws { hsm = try TestHSM.shared() }

    func code(_ body: () async throws -> Void) async -> KMSError.Code? {
        do {
            try await body()
            return nil
        } catch let error as KMSError {
            return error.code
        } catch {
            return nil
        }
    }

    func encrypt(_ service: KeyManagementService, _ keyID: String, _ context: [String: String] = [:]) async throws -> [UInt8] {
        try await service.encrypt(
            keyID: keyID, plaintext: Array("hello".utf8), context: EncryptionContext(context), algorithm: nil, dryRun: nil, caller: caller
        ).ciphertextBlob
    }

    func decrypt(_ service: KeyManagementService, _ blob: [UInt8], _ context: [String: String] = [:], keyID: String? = nil) async throws -> [UInt8] {
        try await service.decrypt(ciphertext: blob, context: EncryptionContext(context), keyID: keyID, algorithm: nil, dryRun: nil, caller: caller).plaintext
    }

    @Test func keysAreDestroyedWhenTheirDeletionWindowEnds() async throws {
        let clock = ManualClock()
        let fixture = try await hsm.makeService(clock: clock)
        let service = fixture.service
        let key = try await service.createKey(.init(tags: [Tag(key: "t", value: "v")]), caller: caller)
        try await service.createAlias("alias/doomed", targetKeyID: key.id.description, caller: caller)
        let blob = try await encrypt(service, key.id.description)
        let wrapped = try #require(try await fixture.store.backingKey(key.id, version: 1)).wrappedKey

        let scheduled = try await service.scheduleKeyDeletion(key.id.description, pendingWindowInDays: 7, caller: caller)
        // The key as stored (dates are REAL seconds in SQLite: equal to well under a millisecond).
        #expect(abs(try #require(scheduled.deletionDate).timeIntervalSince(clock.now().addingTimeInterval(7 * 86_400))) < 0.001)
        #expect(try await service.describeKey(key.id.description, caller: caller).deletionDate == scheduled.deletionDate)
        #expect(await code { _ = try await encrypt(service, key.id.description) } == .invalidState)

        clock.advance(by: 7 * 86_400 - 1)
        #expect(try await service.destroyExpiredKeys().isEmpty)
        #expect(try await service.describeKey(key.id.description, caller: caller).state == .pendingDeletion)

        clock.advance(by: 1)
        #expect(try await service.destroyExpiredKeys() == [key.id])
        #expect(await code { _ = try await service.describeKey(key.id.description, caller: caller) } == .notFound)
        #expect(await code { _ = try await service.describeKey("alias/doomed", caller: caller) } == .notFound)
        #expect(await code { _ = try await decrypt(service, blob) } == .invalidCiphertext)
        #expect(try await fixture.store.backingKey(key.id, version: 1) == nil)
        #expect(!fixture.databaseBytes().containsSequence(wrapped))
    }

    @Test func cancellingDeletionLeavesTheKeyDisabled() async throws {
        let service = try await hsm.makeService().service
        let key = try await service.createKey(.init(), caller: caller)
        _ = try await service.scheduleKeyDeletion(key.id.description, pendingWindowInDays: nil, caller: caller)
        #expect(try await service.describeKey(key.id.description, caller: caller).pendingWindowInDays == 30)
        #expect(await code { try await service.enableKey(key.id.description, caller: caller) } == .invalidState)
        let cancelled = try await service.cancelKeyDeletion(key.id.description, caller: caller)
        #expect(cancelled.state == .disabled && cancelled.deletionDate == nil)
        #expect(await code { _ = try await service.cancelKeyDeletion(key.id.description, caller: caller) } == .invalidState)
        #expect(await code { _ = try await encrypt(service, key.id.description) } == .disabled)
        try await service.enableKey(key.id.description, caller: caller)
        _ = try await encrypt(service, key.id.description)
    }

    @Test(arguments: [0, 6, 31, 366])
    func deletionWindowsOutsideSevenToThirtyDaysAreRefused(days: Int) async throws {
        let service = try await hsm.makeService().service
        let key = try await service.createKey(.init(), caller: caller)
        #expect(await code { _ = try await service.scheduleKeyDeletion(key.id.description, pendingWindowInDays: days, caller: caller) } == .validation)
    }

    @Test func everyIdentifierFormResolvesToTheSameKey() async throws {
        let service = try await hsm.makeService().service
        let key = try await service.createKey(.init(), caller: caller)
        try await service.createAlias("alias/every-form", targetKeyID: key.id.description, caller: caller)
        let arn = "arn:aws:kms:us-east-1:111122223333:key/\(key.id)"
        for identifier in [key.id.description, arn, "alias/every-form", "arn:aws:kms:us-east-1:111122223333:alias/every-form"] {
            #expect(try await service.describeKey(identifier, caller: caller).id == key.id)
        }
        for identifier in ["arn:aws:kms:eu-west-1:111122223333:key/\(key.id)", "arn:aws:kms:us-east-1:444455556666:key/\(key.id)", "nonsense", "alias/none"] {
            #expect(await code { _ = try await service.describeKey(identifier, caller: caller) } == .notFound)
        }
        // Key management takes a key id or ARN, not an alias.
        #expect(await code { try await service.disableKey("alias/every-form", caller: caller) } == .notFound)
    }

    @Test func encryptionContextIsBoundExactly() async throws {
        let service = try await hsm.makeService().service
        let key = try await service.createKey(.init(), caller: caller)
        let blob = try await encrypt(service, key.id.description, ["ab": "c", "tenant": "42"])
        #expect(try await decrypt(service, blob, ["tenant": "42", "ab": "c"]) == Array("hello".utf8))
        for wrong in [[:], ["ab": "c"], ["ab": "c", "tenant": "42", "x": "y"], ["a": "bc", "tenant": "42"], ["ab": "c", "tenant": "43"]] {
            #expect(await code { _ = try await decrypt(service, blob, wrong) } == .invalidCiphertext)
        }
        for index in [0, 5, 18, 25, 40, blob.count - 1] {
            var flipped = blob
            flipped[index] ^= 0x01
            #expect(await code { _ = try await decrypt(service, flipped, ["ab": "c", "tenant": "42"]) } == .invalidCiphertext)
        }
        #expect(await code { _ = try await decrypt(service, Array(blob.dropLast()), ["ab": "c", "tenant": "42"]) } == .invalidCiphertext)
    }

    @Test func decryptingWithAnotherKeysIdIsIncorrectKey() async throws {
        let service = try await hsm.makeService().service
        let a = try await service.createKey(.init(), caller: caller)
        let b = try await service.createKey(.init(), caller: caller)
        let blob = try await encrypt(service, a.id.description)
        #expect(await code { _ = try await decrypt(service, blob, keyID: b.id.description) } == .incorrectKey)
        #expect(try await decrypt(service, blob, keyID: a.id.description) == Array("hello".utf8))
    }

    @Test func reEncryptMovesACiphertextBetweenKeysAndContexts() async throws {
        let service = try await hsm.makeService().service
        let a = try await service.createKey(.init(), caller: caller)
        let b = try await service.createKey(.init(), caller: caller)
        let blob = try await encrypt(service, a.id.description, ["from": "a"])
        let moved = try await service.reEncrypt(
            ciphertext: blob, sourceContext: EncryptionContext(["from": "a"]), sourceKeyID: nil, sourceAlgorithm: nil,
            destinationKeyID: b.id.description, destinationContext: EncryptionContext(["to": "b"]), destinationAlgorithm: nil,
            dryRun: nil, caller: caller)
        #expect(try CiphertextBlob(parsing: moved.ciphertextBlob, region: "us-east-1").keyID == b.id)
        #expect(try await decrypt(service, moved.ciphertextBlob, ["to": "b"]) == Array("hello".utf8))
    }

    @Test func keysAndCiphertextsSurviveARestart() async throws {
        let first = try await hsm.makeService()
        let key = try await first.service.createKey(.init(description: "durable"), caller: caller)
        try await first.service.disableKey(key.id.description, caller: caller)
        try await first.service.enableKey(key.id.description, caller: caller)
        let blob = try await encrypt(first.service, key.id.description, ["k": "v"])
        let second = try await hsm.makeService(databasePath: first.databasePath, provider: try hsm.makeProvider())
        #expect(try await second.service.describeKey(key.id.description, caller: caller).description == "durable")
        #expect(try await decrypt(second.service, blob, ["k": "v"]) == Array("hello".utf8))
    }

    @Test func boundsAreValidationErrors() async throws {
        let service = try await hsm.makeService().service
        let key = try await service.createKey(.init(), caller: caller)
        let id = key.id.description
        #expect(await code {
            _ = try await service.encrypt(keyID: id, plaintext: [], context: .init(), algorithm: nil, dryRun: nil, caller: caller)
        } == .validation)
        #expect(await code {
            _ = try await service.encrypt(keyID: id, plaintext: Array(repeating: 0, count: 4097), context: .init(), algorithm: nil, dryRun: nil, caller: caller)
        } == .validation)
        for (spec, bytes) in [(nil, nil), ("AES_256", 32), (nil, 0), (nil, 1025), ("AES_512", nil)] as [(String?, Int?)] {
            #expect(await code {
                _ = try await service.generateDataKey(
                    keyID: id, keySpec: spec, numberOfBytes: bytes, context: .init(), includePlaintext: true, dryRun: nil, caller: caller)
            } == .validation)
        }
        #expect(await code { _ = try await service.generateRandom(numberOfBytes: 1025, customKeyStoreID: nil, caller: caller) } == .validation)
        #expect(try await service.generateRandom(numberOfBytes: 1024, customKeyStoreID: nil, caller: caller).count == 1024)
        #expect(await code { _ = try await service.createKey(.init(keySpec: "RSA_2048"), caller: caller) } == .validation)  // KeyUsage is required
        #expect(await code { _ = try await service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "SM2"), caller: caller) } == .unsupportedOperation)
        #expect(await code { _ = try await service.createKey(.init(tags: [Tag(key: "aws:x", value: "")]), caller: caller) } == .tag)
        #expect(await code { try await service.createAlias("alias/aws/mine", targetKeyID: id, caller: caller) } == .notAuthorized)
    }
}

/// Rotation, on demand and on schedule, with an injected clock.
@Suite struct RotationTests {
    let hsm: TestHSM
    let caller = ServiceFixture.caller
    init() throws { hsm = try TestHSM.shared() }

    func encrypt(_ service: KeyManagementService, _ keyID: String) async throws -> [UInt8] {
        try await service.encrypt(keyID: keyID, plaintext: [42], context: EncryptionContext(["r": "1"]), algorithm: nil, dryRun: nil, caller: caller)
            .ciphertextBlob
    }

    @Test func rotationOnScheduleAndOnDemandKeepsEveryCiphertextReadable() async throws {
        let clock = ManualClock()
        let fixture = try await hsm.makeService(clock: clock)
        let service = fixture.service
        let key = try await service.createKey(.init(), caller: caller)
        let id = key.id.description
        let first = try await encrypt(service, id)

        try await service.enableKeyRotation(id, periodInDays: 90, caller: caller)
        let status = try await service.getKeyRotationStatus(id, caller: caller)
        #expect(status.schedule?.periodInDays == 90)
        #expect(abs(status.schedule!.nextRotationDate.timeIntervalSince(clock.now().addingTimeInterval(90 * 86_400))) < 0.001)

        clock.advance(by: 89 * 86_400)
        #expect(try await service.rotateDueKeys().isEmpty)
        clock.advance(by: 86_400)
        #expect(try await service.rotateDueKeys() == [key.id])
        let second = try await encrypt(service, id)
        _ = try await service.rotateKeyOnDemand(id, caller: caller)
        let third = try await encrypt(service, id)

        #expect(try [first, second, third].map { try CiphertextBlob(parsing: $0, region: "us-east-1").backingKeyVersion } == [1, 2, 3])
        for blob in [first, second, third] {
            let opened = try await service.decrypt(ciphertext: blob, context: EncryptionContext(["r": "1"]), keyID: nil, algorithm: nil, dryRun: nil, caller: caller)
            #expect(opened.plaintext == [42])
        }
        let rotations = try await service.listKeyRotations(id, limit: nil, marker: nil, caller: caller).items
        #expect(rotations.map(\.type) == [.automatic, .onDemand])
        let next = try #require(try await service.getKeyRotationStatus(id, caller: caller).schedule?.nextRotationDate)
        #expect(abs(next.timeIntervalSince(clock.now().addingTimeInterval(90 * 86_400))) < 0.001, "the schedule moves on by one period")
        let page = try await service.listKeyRotations(id, limit: 1, marker: nil, caller: caller)
        #expect(page.items.map(\.version) == [2])
        #expect(try await service.listKeyRotations(id, limit: 1, marker: page.nextMarker, caller: caller).items.map(\.version) == [3])

        try await service.disableKeyRotation(id, caller: caller)
        clock.advance(by: 400 * 86_400)
        #expect(try await service.rotateDueKeys().isEmpty)
    }

    @Test func onDemandRotationStopsAtTwentyFive() async throws {
        let service = try await hsm.makeService().service
        let id = try await service.createKey(.init(), caller: caller).id.description
        for _ in 0..<KeyManagementService.maximumOnDemandRotations { _ = try await service.rotateKeyOnDemand(id, caller: caller) }
        await #expect { _ = try await service.rotateKeyOnDemand(id, caller: caller) } throws: { ($0 as? KMSError)?.code == .limitExceeded }
        #expect(try await service.listKeyRotations(id, limit: nil, marker: nil, caller: caller).items.count == 25)
    }
}
