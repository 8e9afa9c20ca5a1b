import Foundation
import KMS
import KMSSQLite
import Testing
import TrentTestSupport

/// The embedded store on real SQLite files: durability across reopen, paging, uniqueness, destruction.
@Suite struct SQLiteMetadataStoreTests {
    let path: String
    init() throws { path = try TestHSM.shared().makeDatabasePath() }

    func makeKey(_ date: Date = Date(timeIntervalSince1970: 1_800_000_000)) -> (KeyRecord, BackingKeyRecord) {
        let id = KeyID()
        let key = KeyRecord(
            id: id, accountID: "111122223333", region: "us-east-1", creationDate: date, description: "d", keySpec: .symmetricDefault,
            keyUsage: .encryptDecrypt, origin: .awsKMS, keyManager: .customer, state: .enabled, policy: "{}", currentVersion: 1)
        let backing = BackingKeyRecord(
            keyID: id, version: 1, wrappedKey: (0..<40).map { _ in UInt8.random(in: 0...255) }, binding: Array(repeating: 3, count: 40),
            wrappingKeyLabel: "domain", creationDate: date)
        return (key, backing)
    }

    @Test func everythingSurvivesReopening() async throws {
        let (key, backing) = makeKey()
        do {
            let store = try SQLiteMetadataStore(path: path)
            try await store.insertKey(key, backingKey: backing, tags: [Tag(key: "team", value: "red")])
            try await store.insertAlias(AliasRecord(name: "alias/one", accountID: "111122223333", region: "us-east-1", targetKeyID: key.id, creationDate: key.creationDate, lastUpdatedDate: key.creationDate))
            _ = try await store.updateKey(key.id, .state(.disabled), if: .any)
            try await store.reserveNonces(key.id, version: 1, upTo: 65_536)
        }
        let reopened = try SQLiteMetadataStore(path: path)
        let loaded = try #require(try await reopened.key(key.id))
        #expect(loaded.state == .disabled)
        #expect(loaded.creationDate == key.creationDate)
        #expect(try await reopened.backingKey(key.id, version: 1)?.wrappedKey == backing.wrappedKey)
        #expect(try await reopened.backingKey(key.id, version: 1)?.noncesReserved == 65_536)
        #expect(try await reopened.tags(of: key.id) == [Tag(key: "team", value: "red")])
        #expect(try await reopened.alias(named: "alias/one", account: "111122223333", region: "us-east-1")?.targetKeyID == key.id)
    }

    /// Related multi-Region keys keep one copy of the material, under the key it was made for: a new version is every
    /// related key's current one, and destroying the owner moves the material to the oldest related key left.
    @Test func relatedMultiRegionKeysShareTheirMaterial() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (single, singleBacking) = makeKey()
        var (primary, backing) = makeKey()
        primary.id = KeyID(multiRegion: UUID(), region: "us-east-1")
        primary.materialOwner = primary.id
        primary.multiRegionKeyType = .primary
        backing.keyID = primary.id
        var replica = primary
        (replica.id, replica.region, replica.multiRegionKeyType) = (KeyID(multiRegion: primary.id.uuid, region: "us-west-2"), "us-west-2", .replica)
        try await store.insertKey(single, backingKey: singleBacking, tags: [])
        try await store.insertKey(primary, backingKey: backing, tags: [])
        var early = backing
        early.version = 2
        try await store.addBackingKey(early)
        // Made from a read of the primary before that rotation: it starts at the current version all the same.
        try await store.insertKey(replica, backingKey: nil, tags: [Tag(key: "side", value: "west")])
        (primary.currentVersion, replica.currentVersion) = (2, 2)
        #expect(try await store.key(replica.id) == replica)
        #expect(try await store.relatedKeys(of: primary.id) == [primary, replica])
        #expect(try await store.relatedKeys(of: single.id) == [])

        var second = backing
        (second.version, second.rotationType) = (3, .onDemand)
        try await store.addBackingKey(second)
        #expect(try await store.key(replica.id)?.currentVersion == 3)
        #expect(try await store.key(single.id)?.currentVersion == 1)

        try await store.destroyKey(primary.id)
        #expect(try await store.key(primary.id) == nil)
        let left = try #require(try await store.key(replica.id))
        #expect(left.materialOwner == replica.id)
        #expect(try await store.backingKeys(of: replica.id).map(\.version) == [1, 2, 3])
        #expect(try await store.backingKeys(of: replica.id).first?.wrappedKey == backing.wrappedKey)
        #expect(try await store.tags(of: replica.id) == [Tag(key: "side", value: "west")])
        try await store.destroyKey(replica.id)
        #expect(try await store.backingKeys(of: replica.id).isEmpty)
        #expect(try await store.key(single.id) != nil)
    }

    /// A scheduled rotation stores its new version and its next date in one transaction (issue #12: a kill between two
    /// writes left the claim's lease as the next date, and the key rotated a second time when it ended); the date is
    /// written only where the condition holds, the version in any case.
    @Test func aNewVersionAndTheChangeItCarriesAreOneWrite() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [])
        let lease = RotationSchedule(periodInDays: 90, nextRotationDate: Date(timeIntervalSince1970: 1_800_000_600))
        let next = RotationSchedule(periodInDays: 90, nextRotationDate: Date(timeIntervalSince1970: 1_807_776_000))
        _ = try await store.updateKey(key.id, .rotationSchedule(lease), if: .any)
        var second = backing
        (second.version, second.rotationType) = (2, .automatic)
        try await store.addBackingKey(second, with: .rotationSchedule(next), if: KeyCondition(rotationSchedule: lease))
        var loaded = try #require(try await store.key(key.id))
        #expect(loaded.currentVersion == 2)
        #expect(loaded.rotationSchedule == next)

        var third = backing
        (third.version, third.rotationType) = (3, .automatic)
        let other = RotationSchedule(periodInDays: 90, nextRotationDate: Date(timeIntervalSince1970: 1_900_000_000))
        try await store.addBackingKey(third, with: .rotationSchedule(other), if: KeyCondition(rotationSchedule: lease))
        loaded = try #require(try await store.key(key.id))
        #expect(loaded.currentVersion == 3)
        #expect(loaded.rotationSchedule == next, "the schedule changed meanwhile: it stands")
        #expect(try await store.backingKeys(of: key.id).map(\.version) == [1, 2, 3])
    }

    @Test func keysPageInCreationOrderWithOpaqueMarkers() async throws {
        let store = try SQLiteMetadataStore(path: path)
        var ids: [KeyID] = []
        for _ in 0..<5 {
            let (key, backing) = makeKey()
            try await store.insertKey(key, backingKey: backing, tags: [])
            ids.append(key.id)
        }
        var seen: [KeyID] = []
        var marker: String?
        repeat {
            let page = try await store.listKeys(account: "111122223333", region: "us-east-1", after: marker, limit: 2)
            #expect(page.items.count <= 2)
            seen += page.items.map(\.id)
            marker = page.nextMarker
        } while marker != nil
        #expect(seen == ids)
        await #expect(throws: MetadataStoreError.self) { _ = try await store.listKeys(account: "111122223333", region: "us-east-1", after: "not a marker", limit: 2) }
    }

    @Test func aliasNamesAreUniqueAndPageByName() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [])
        let now = Date()
        for name in ["alias/c", "alias/a", "alias/b"] {
            try await store.insertAlias(AliasRecord(name: name, accountID: "111122223333", region: "us-east-1", targetKeyID: key.id, creationDate: now, lastUpdatedDate: now))
        }
        await #expect(throws: MetadataStoreError.self) {
            try await store.insertAlias(AliasRecord(name: "alias/a", accountID: "111122223333", region: "us-east-1", targetKeyID: key.id, creationDate: now, lastUpdatedDate: now))
        }
        let first = try await store.listAliases(account: "111122223333", region: "us-east-1", for: key.id, after: nil, limit: 2)
        #expect(first.items.map(\.name) == ["alias/a", "alias/b"])
        let second = try await store.listAliases(account: "111122223333", region: "us-east-1", for: key.id, after: first.nextMarker, limit: 2)
        #expect(second.items.map(\.name) == ["alias/c"])
        #expect(second.nextMarker == nil)
        #expect(try await store.listAliases(account: "111122223333", region: "us-east-1", for: KeyID(), after: nil, limit: 10).items.isEmpty)
        // Alias names are unique per account, not globally.
        try await store.insertAlias(AliasRecord(name: "alias/a", accountID: "444455556666", region: "us-east-1", targetKeyID: key.id, creationDate: now, lastUpdatedDate: now))
        #expect(try await store.listAliases(account: "444455556666", region: "us-east-1", for: nil, after: nil, limit: 10).items.map(\.name) == ["alias/a"])
    }

    @Test func tagsOverwriteByKey() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [Tag(key: "a", value: "1")])
        try await store.putTags([Tag(key: "a", value: "2"), Tag(key: "b", value: "3")], on: key.id)
        try await store.removeTags(["b", "never-set"], from: key.id)
        #expect(try await store.tags(of: key.id) == [Tag(key: "a", value: "2")])
    }

    @Test func destroyingAKeyRemovesItAndOverwritesItsWrappedMaterial() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [Tag(key: "t", value: "v")])
        try await store.insertAlias(AliasRecord(name: "alias/gone", accountID: "111122223333", region: "us-east-1", targetKeyID: key.id, creationDate: Date(), lastUpdatedDate: Date()))
        try await store.destroyKey(key.id)
        #expect(try await store.key(key.id) == nil)
        #expect(try await store.backingKey(key.id, version: 1) == nil)
        #expect(try await store.alias(named: "alias/gone", account: "111122223333", region: "us-east-1") == nil)
        #expect(try await store.tags(of: key.id).isEmpty)
        let bytes = ["", "-wal"].flatMap { (FileManager.default.contents(atPath: path + $0)).map { Array($0) } ?? [] }
        #expect(!bytes.containsSequence(backing.wrappedKey))
    }

    @Test func keysPendingDeletionAreFoundByDate() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [])
        _ = try await store.updateKey(key.id, .deletionScheduled(date: Date(timeIntervalSince1970: 2_000_000_000), pendingWindowInDays: 7), if: .any)
        #expect(try await store.keysPendingDeletion(dueBy: Date(timeIntervalSince1970: 1_999_999_999)).isEmpty)
        #expect(try await store.keysPendingDeletion(dueBy: Date(timeIntervalSince1970: 2_000_000_000)).map(\.id) == [key.id])
    }
}
