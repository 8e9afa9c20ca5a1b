import Foundation
import KMS
import KMSSQLite
import Testing
import TrentTestSupport

/// Deleting multi-Region keys, with an injected clock: a primary key outlives its replicas (PendingReplicaDeletion),
/// and the shared material outlives the key it was made for while related keys are left.
@Suite struct MultiRegionKeyTests {
    let hsm: TestHSM
    let east = ServiceFixture.caller
    let west: Caller
    init() throws {
        hsm = try TestHSM.shared()
        var west = ServiceFixture.caller
        west.region = "us-west-2"
        self.west = west
    }

    func encrypt(_ service: KeyManagementService, _ keyID: String, as caller: Caller) async throws -> [UInt8] {
        try await service.encrypt(
            keyID: keyID, plaintext: Array("hello".utf8), context: EncryptionContext([:]), algorithm: nil, dryRun: nil, caller: caller
        ).ciphertextBlob
    }

    func decrypt(_ service: KeyManagementService, _ blob: [UInt8], as caller: Caller) async throws -> [UInt8] {
        try await service.decrypt(ciphertext: blob, context: EncryptionContext([:]), keyID: nil, algorithm: nil, dryRun: nil, caller: caller).plaintext
    }

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

    @Test func aPrimaryKeyWaitsForItsReplicasToBeDeleted() async throws {
        let clock = ManualClock()
        let fixture = try await hsm.makeService(clock: clock, regions: ["us-west-2"])
        let service = fixture.service
        let primary = try await service.createKey(.init(multiRegion: true), caller: east)
        let id = primary.id.description
        _ = try await service.replicateKey(.init(keyID: id, replicaRegion: "us-west-2"), caller: east)

        let scheduled = try await service.scheduleKeyDeletion(id, pendingWindowInDays: 7, caller: east)
        #expect(scheduled.state == .pendingReplicaDeletion && scheduled.deletionDate == nil && scheduled.pendingWindowInDays == 7)
        #expect(await code { _ = try await encrypt(service, id, as: east) } == .invalidState)
        #expect(await code { _ = try await service.replicateKey(.init(keyID: id, replicaRegion: "us-west-2"), caller: east) } == .invalidState)
        // Cancelling works from PendingReplicaDeletion too, and leaves the key Disabled.
        #expect(try await service.cancelKeyDeletion(id, caller: east).state == .disabled)
        try await service.enableKey(id, caller: east)
        _ = try await service.scheduleKeyDeletion(id, pendingWindowInDays: 7, caller: east)

        let blob = try await encrypt(service, id, as: west)
        _ = try await service.scheduleKeyDeletion(id, pendingWindowInDays: 10, caller: west)
        clock.advance(by: 10 * 86_400)
        #expect(try await service.destroyExpiredKeys() == [KeyID(multiRegion: primary.id.uuid, region: "us-west-2")])
        // The primary's own waiting period starts now.
        let waiting = try await service.describeKey(id, caller: east)
        #expect(waiting.state == .pendingDeletion)
        #expect(abs(try #require(waiting.deletionDate).timeIntervalSince(clock.now().addingTimeInterval(7 * 86_400))) < 0.001)
        #expect(try await service.cancelKeyDeletion(id, caller: east).state == .disabled)
        try await service.enableKey(id, caller: east)
        #expect(try await decrypt(service, blob, as: east) == Array("hello".utf8))
        _ = try await service.scheduleKeyDeletion(id, pendingWindowInDays: 7, caller: east)
        clock.advance(by: 7 * 86_400)
        #expect(try await service.destroyExpiredKeys() == [primary.id])
        #expect(try await fixture.store.backingKeys(of: primary.id).isEmpty)
    }

    /// After UpdatePrimaryRegion the key the material was made for is a replica, and may go first: the material stays
    /// for the keys left.
    @Test func theMaterialOutlivesTheKeyItWasMadeFor() async throws {
        let clock = ManualClock()
        let fixture = try await hsm.makeService(clock: clock, regions: ["us-west-2"])
        let service = fixture.service
        let first = try await service.createKey(.init(multiRegion: true), caller: east)
        let id = first.id.description
        _ = try await service.replicateKey(.init(keyID: id, replicaRegion: "us-west-2"), caller: east)
        let blob = try await encrypt(service, id, as: east)
        try await service.updatePrimaryRegion(id, primaryRegion: "us-west-2", caller: east)
        _ = try await service.scheduleKeyDeletion(id, pendingWindowInDays: 7, caller: east)
        clock.advance(by: 7 * 86_400)
        #expect(try await service.destroyExpiredKeys() == [first.id])
        let left = try await service.describeKey(id, caller: west)
        #expect(left.materialOwner == left.id && left.multiRegionKeyType == .primary)
        #expect(try await service.multiRegionConfiguration(of: left)?.replicaKeys == [])
        #expect(try await decrypt(service, blob, as: west) == Array("hello".utf8))
        #expect(try await decrypt(service, try await encrypt(service, id, as: west), as: west) == Array("hello".utf8))
        // Deleting the last one is an ordinary deletion, and takes the material.
        let scheduled = try await service.scheduleKeyDeletion(id, pendingWindowInDays: 7, caller: west)
        #expect(scheduled.state == .pendingDeletion)
        clock.advance(by: 7 * 86_400)
        #expect(try await service.destroyExpiredKeys() == [left.id])
        #expect(try await fixture.store.backingKeys(of: left.id).isEmpty)
    }
}
