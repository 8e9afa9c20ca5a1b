import Foundation
import KMS
import GRDB
@testable import KMSSQLite
import Testing
import TrentTestSupport

/// The store's read cache never answers with a row older than the database: changes made through the same
/// store are seen by the very next read, and changes committed by another connection (another process, such as
/// `trent identity`) within a millisecond.
@Suite struct ReadCacheTests {
    let path: String
    init() throws { path = try TestHSM.shared().makeDatabasePath() }

    func makeKey() -> (KeyRecord, BackingKeyRecord) {
        let id = KeyID()
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        let key = KeyRecord(
            id: id, accountID: "111122223333", region: "us-east-1", creationDate: date, description: "d", keySpec: .symmetricDefault,
            keyUsage: .encryptDecrypt, origin: .awsKMS, keyManager: .customer, state: .enabled, policy: "{}", currentVersion: 1)
        let backing = BackingKeyRecord(
            keyID: id, version: 1, wrappedKey: Array(repeating: 1, count: 40), binding: Array(repeating: 3, count: 40),
            wrappingKeyLabel: "domain", creationDate: date)
        return (key, backing)
    }

    func grant(on key: KeyID) -> GrantRecord {
        GrantRecord(
            id: UUID().uuidString, keyID: key, name: nil, granteePrincipal: "arn:aws:iam::111122223333:user/bob", retiringPrincipal: nil,
            operations: [.encrypt], constraints: nil, issuingAccount: "111122223333", creationDate: Date(timeIntervalSince1970: 1_800_000_000))
    }

    @Test func readsAreCachedAndWritesThroughTheSameStoreTakeEffectAtOnce() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [Tag(key: "team", value: "red")])
        #expect(try await store.key(key.id)?.state == .enabled)
        #expect(try await store.tags(of: key.id).count == 1)
        #expect(store.cachedRowCount >= 2)

        _ = try await store.updateKey(key.id, .state(.disabled), if: .any)
        #expect(try await store.key(key.id)?.state == .disabled)

        try await store.removeTags(["team"], from: key.id)
        #expect(try await store.tags(of: key.id).isEmpty)

        let granted = grant(on: key.id)
        try await store.insertGrant(granted)
        #expect(try await store.grants(of: key.id).map(\.id) == [granted.id])
        try await store.deleteGrant(granted.id)
        #expect(try await store.grants(of: key.id).isEmpty)
    }

    @Test func changesCommittedByAnotherConnectionAreSeenByTheNextRead() async throws {
        let server = try SQLiteMetadataStore(path: path)
        let admin = try SQLiteMetadataStore(path: path)  // stands for another process writing the same file
        let (key, backing) = makeKey()
        try await server.insertKey(key, backingKey: backing, tags: [])
        let granted = grant(on: key.id)
        try await server.insertGrant(granted)

        // Fill the server's cache.
        #expect(try await server.key(key.id)?.state == .enabled)
        #expect(try await server.grants(of: key.id).count == 1)
        #expect(try await server.key(key.id)?.state == .enabled)

        _ = try await admin.updateKey(key.id, .state(.disabled), if: .any)
        try await admin.deleteGrant(granted.id)
        // Another process's commits are seen within a millisecond (the store asks SQLite at most that often).
        try await Task.sleep(for: .milliseconds(2))
        #expect(try await server.key(key.id)?.state == .disabled)
        #expect(try await server.grants(of: key.id).isEmpty)

        let principal = Principal(
            arn: "arn:aws:iam::111122223333:user/alice", kind: .user, accountID: "111122223333", name: "alice",
            creationDate: Date(timeIntervalSince1970: 1_800_000_000))
        #expect(try await server.principal(principal.arn) == nil)
        try await admin.insertAccount(Account(id: "111122223333", name: "main", creationDate: Date(timeIntervalSince1970: 1_800_000_000)))
        try await admin.insertPrincipal(principal)
        try await Task.sleep(for: .milliseconds(2))
        #expect(try await server.principal(principal.arn) == principal)
    }

    /// A nonce reservation forgets its own backing-key row and keeps an in-flight read of that row out (it may
    /// predate the reservation), while in-flight reads of other rows are kept.
    @Test func aReservationKeepsOnlyItsOwnRowOut() throws {
        let reads = CachedReads(watch: try DatabaseQueue(), capacity: 100)
        let (reserved, other) = (ReadCache.BackingKeyID(keyID: KeyID(), version: 1), ReadCache.BackingKeyID(keyID: KeyID(), version: 1))
        let generation = try #require(reads.check())
        let backingGeneration = reads.backingGeneration
        reads.invalidate(backingKeys: [reserved])  // commits while both reads are in flight
        for id in [reserved, other] {
            reads.keep(\.backingKeys, id, BackingKeyRecord?.none, readUnder: generation, backingGeneration: backingGeneration)
        }
        #expect(reads.lookup(\.backingKeys, reserved) == nil, "a read that began before the reservation is not kept")
        #expect(reads.lookup(\.backingKeys, other) != nil, "other rows' reads are kept")

        let later = reads.backingGeneration
        reads.keep(\.backingKeys, reserved, BackingKeyRecord?.none, readUnder: generation, backingGeneration: later)
        #expect(reads.lookup(\.backingKeys, reserved) != nil, "a read begun after the reservation is kept")
    }

    @Test func aDisabledCacheStillAnswers() async throws {
        let store = try SQLiteMetadataStore(path: path, cacheCapacity: 0)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [])
        #expect(try await store.key(key.id)?.id == key.id)
        #expect(store.cachedRowCount == 0)
    }
}
