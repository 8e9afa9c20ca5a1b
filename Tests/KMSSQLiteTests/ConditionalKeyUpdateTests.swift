import Foundation
import KMS
import KMSSQLite
import Testing
import TrentTestSupport

/// `updateKey(_:_:if:)` and the imported-material writes on real SQLite: a change writes only its own columns,
/// and only when the row satisfies the condition as it is written; the read cache follows at once.
@Suite struct ConditionalKeyUpdateTests {
    let path: String
    init() throws { path = try TestHSM.shared().makeDatabasePath() }

    func makeKey(origin: KeyOrigin = .awsKMS, state: KeyState = .enabled) -> (KeyRecord, BackingKeyRecord) {
        let id = KeyID()
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        let key = KeyRecord(
            id: id, accountID: "111122223333", region: "us-east-1", creationDate: date, description: "d", keySpec: .symmetricDefault,
            keyUsage: .encryptDecrypt, origin: origin, keyManager: .customer, state: state, policy: "{}", currentVersion: 1)
        let backing = BackingKeyRecord(
            keyID: id, version: 1, wrappedKey: Array(repeating: 7, count: 40), binding: Array(repeating: 3, count: 40),
            wrappingKeyLabel: "domain", creationDate: date)
        return (key, backing)
    }

    @Test func aChangeWritesOnlyItsColumns() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [])
        _ = try await store.key(key.id)  // cached
        let schedule = RotationSchedule(periodInDays: 90, nextRotationDate: Date(timeIntervalSince1970: 1_900_000_000))
        #expect(try await store.updateKey(key.id, .policy("{\"p\":1}"), if: .notPendingDeletion)?.policy == "{\"p\":1}")
        #expect(try await store.updateKey(key.id, .description("new"), if: .notPendingDeletion)?.policy == "{\"p\":1}")
        _ = try await store.updateKey(key.id, .rotationSchedule(schedule), if: .state(in: [.enabled]))
        _ = try await store.updateKey(key.id, .state(.disabled), if: .state(in: [.enabled, .disabled]))
        let read = try #require(try await store.key(key.id))
        #expect(read.policy == "{\"p\":1}" && read.description == "new" && read.state == .disabled)
        #expect(read.rotationSchedule?.periodInDays == 90)
        #expect(read.currentVersion == 1 && read.creationDate == key.creationDate)
    }

    @Test func aConditionFalseForTheRowWritesNothing() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [])
        let date = Date(timeIntervalSince1970: 1_800_604_800)
        let scheduled = try #require(try await store.updateKey(key.id, .deletionScheduled(date: date, pendingWindowInDays: 7), if: .notPendingDeletion))
        #expect(scheduled.state == .pendingDeletion && scheduled.pendingWindowInDays == 7)
        #expect(abs(try #require(scheduled.deletionDate).timeIntervalSince(date)) < 0.001)
        _ = try await store.key(key.id)  // cached as pending deletion

        #expect(try await store.updateKey(key.id, .description("late"), if: .notPendingDeletion) == nil)
        #expect(try await store.updateKey(key.id, .deletionScheduled(date: date, pendingWindowInDays: 30), if: .notPendingDeletion) == nil)
        #expect(try await store.updateKey(key.id, .state(.enabled), if: .state(in: [.enabled, .disabled])) == nil)
        #expect(try await store.updateKey(KeyID(), .description("nobody"), if: .any) == nil, "no such key")
        #expect(try await store.updateKey(key.id, .state(.enabled), if: .state(in: [])) == nil)
        let read = try #require(try await store.key(key.id))
        #expect(read == scheduled)

        let cancelled = try #require(try await store.updateKey(key.id, .deletionCancelled, if: .state(in: [.pendingDeletion])))
        #expect(cancelled.state == .disabled && cancelled.deletionDate == nil && cancelled.pendingWindowInDays == nil)
        #expect(try await store.key(key.id) == cancelled, "the cache follows the write")
        #expect(try await store.updateKey(key.id, .deletionCancelled, if: .state(in: [.pendingDeletion])) == nil)
    }

    @Test func cancellingDeletionOfAKeyWithoutMaterialReturnsItToPendingImport() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, _) = makeKey(origin: .external, state: .pendingImport)
        try await store.insertKey(key, backingKey: nil, tags: [])
        _ = try await store.updateKey(key.id, .deletionScheduled(date: Date(), pendingWindowInDays: 7), if: .notPendingDeletion)
        #expect(try await store.updateKey(key.id, .deletionCancelled, if: .state(in: [.pendingDeletion]))?.state == .pendingImport)
    }

    @Test func importedMaterialIsStoredAndDeletedOnlyUnderItsCondition() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, material) = makeKey(origin: .external, state: .pendingImport)
        try await store.insertKey(key, backingKey: nil, tags: [])
        let validTo = Date(timeIntervalSince1970: 1_900_000_000)

        let imported = try #require(
            try await store.storeImportedMaterial(material, expirationModel: .expires, validTo: validTo, if: .state(in: [.pendingImport])))
        #expect(imported.state == .enabled && imported.expirationModel == .expires && imported.validTo != nil)
        #expect(try await store.backingKey(key.id, version: 1)?.wrappedKey == material.wrappedKey)
        // Not PendingImport any more: a second import is refused and changes nothing.
        var other = material
        other.wrappedKey = Array(repeating: 9, count: 40)
        #expect(try await store.storeImportedMaterial(other, expirationModel: .doesNotExpire, validTo: nil, if: .state(in: [.pendingImport])) == nil)
        #expect(try await store.backingKey(key.id, version: 1)?.wrappedKey == material.wrappedKey)

        // Expiry applies only while the material still expires by then.
        #expect(try await store.deleteImportedMaterial(of: key.id, version: 1, if: KeyCondition(materialExpiringBy: Date(timeIntervalSince1970: 1_899_999_999))) == nil)
        #expect(try await store.backingKey(key.id, version: 1)?.wrappedKey == material.wrappedKey)
        // A key pending deletion stays so when its material goes.
        _ = try await store.updateKey(key.id, .deletionScheduled(date: Date(), pendingWindowInDays: 7), if: .notPendingDeletion)
        let expired = try #require(try await store.deleteImportedMaterial(of: key.id, version: 1, if: KeyCondition(materialExpiringBy: validTo)))
        #expect(expired.state == .pendingDeletion && expired.expirationModel == nil && expired.validTo == nil)
        #expect(try await store.backingKey(key.id, version: 1)?.wrappedKey == [])
        #expect(try await store.updateKey(key.id, .deletionCancelled, if: .state(in: [.pendingDeletion]))?.state == .pendingImport)
    }

    /// NEW_KEY_MATERIAL into a key that has material: a later version is staged (the key as it was), made current by
    /// an on-demand rotation (the key takes its expiry), or deleted while staged (gone; the key as it was). Deleting a
    /// version the key uses makes it PendingImport until that version's material returns.
    @Test func stagedMaterialIsHeldApartUntilItBecomesCurrent() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, first) = makeKey(origin: .external, state: .pendingImport)
        try await store.insertKey(key, backingKey: nil, tags: [])
        _ = try #require(try await store.storeImportedMaterial(first, expirationModel: .doesNotExpire, validTo: nil, if: .any))
        var second = first
        second.version = 2
        second.wrappedKey = Array(repeating: 5, count: 40)
        second.materialID = KeyMaterialID.make()
        second.materialDescription = "second"
        let validTo = Date(timeIntervalSince1970: 1_900_000_000)
        let staged = try #require(try await store.storeImportedMaterial(second, expirationModel: .expires, validTo: validTo, if: .any))
        #expect(staged.state == .enabled && staged.currentVersion == 1 && staged.expirationModel == .doesNotExpire && staged.validTo == nil)
        let stored = try #require(try await store.backingKey(key.id, version: 2))
        #expect(stored.materialID == second.materialID && stored.materialDescription == "second" && stored.rotationType == nil)

        // Deleted while staged: the version goes.
        #expect(try await store.deleteImportedMaterial(of: key.id, version: 2, if: .any)?.state == .enabled)
        #expect(try await store.backingKey(key.id, version: 2) == nil)

        // A staged version expires by its own ValidTo (the key's is its current version's).
        _ = try await store.storeImportedMaterial(second, expirationModel: .expires, validTo: validTo, if: .any)
        #expect(try await store.keysWithExpiringMaterial(dueBy: validTo).map(\.id) == [key.id])
        #expect(try await store.deleteImportedMaterial(of: key.id, version: 2, if: KeyCondition(materialExpiringBy: validTo.addingTimeInterval(-1))) == nil)
        #expect(try await store.deleteImportedMaterial(of: key.id, version: 2, if: KeyCondition(materialExpiringBy: validTo))?.state == .enabled)
        #expect(try await store.backingKey(key.id, version: 2) == nil)
        #expect(try await store.keysWithExpiringMaterial(dueBy: validTo).isEmpty)

        _ = try await store.storeImportedMaterial(second, expirationModel: .expires, validTo: validTo, if: .any)
        let rotated = Date(timeIntervalSince1970: 1_850_000_000)
        let current = try #require(try await store.makeStagedMaterialCurrent(key.id, version: 2, on: rotated, if: .state(in: [.enabled])))
        #expect(current.currentVersion == 2 && current.expirationModel == .expires && current.validTo == validTo)
        #expect(try await store.backingKey(key.id, version: 2)?.rotationType == .onDemand)
        #expect(try await store.backingKey(key.id, version: 2)?.creationDate == rotated)
        #expect(try await store.makeStagedMaterialCurrent(key.id, version: 2, on: rotated, if: .any) == nil, "made current once")

        // The earlier version's material deleted: PendingImport until it returns (with its description kept).
        #expect(try await store.deleteImportedMaterial(of: key.id, version: 1, if: .any)?.state == .pendingImport)
        #expect(try await store.key(key.id)?.expirationModel == .expires, "the current version's expiry stays")
        var returning = first
        returning.materialDescription = nil
        #expect(try await store.storeImportedMaterial(returning, expirationModel: .doesNotExpire, validTo: nil, if: .any)?.state == .enabled)
        #expect(try await store.key(key.id)?.validTo == validTo, "a non-current version's expiry is its own")
        #expect(try await store.backingKey(key.id, version: 1)?.materialID == first.materialID)
    }

    @Test func rotationConditionsCompareTheScheduleInTheRow() async throws {
        let store = try SQLiteMetadataStore(path: path)
        let (key, backing) = makeKey()
        try await store.insertKey(key, backingKey: backing, tags: [])
        let due = RotationSchedule(periodInDays: 90, nextRotationDate: Date(timeIntervalSince1970: 1_800_000_000.123456))
        let next = RotationSchedule(periodInDays: 90, nextRotationDate: Date(timeIntervalSince1970: 1_807_776_000.123456))
        _ = try await store.updateKey(key.id, .rotationSchedule(due), if: .any)
        let read = try #require(try await store.key(key.id)?.rotationSchedule)
        let claim = KeyCondition(states: [.enabled], rotationDueBy: Date(timeIntervalSince1970: 1_800_000_001), rotationSchedule: read)
        #expect(try await store.updateKey(key.id, .rotationSchedule(next), if: claim) != nil)
        #expect(try await store.updateKey(key.id, .rotationSchedule(next), if: claim) == nil, "claimed once")
        #expect(try await store.updateKey(key.id, .rotationSchedule(due), if: KeyCondition(rotationSchedule: next)) != nil, "given back")
        _ = try await store.updateKey(key.id, .rotationSchedule(nil), if: .any)
        #expect(try await store.updateKey(key.id, .rotationSchedule(next), if: claim) == nil, "rotation disabled: nothing due")
    }

    @Test func retirableGrantsFilterByTheKeysAccount() async throws {
        let store = try SQLiteMetadataStore(path: path)
        var grants: [String: String] = [:]
        for account in ["111122223333", "444455556666"] {
            let (key, backing) = makeKey()
            var owned = key
            owned.accountID = account
            try await store.insertKey(owned, backingKey: backing, tags: [])
            let grant = GrantRecord(
                id: UUID().uuidString, keyID: key.id, name: nil, granteePrincipal: "rds.us-east-1.amazonaws.com",
                retiringPrincipal: "rds.us-east-1.amazonaws.com", operations: [.decrypt], constraints: nil, issuingAccount: account,
                creationDate: Date(timeIntervalSince1970: 1_800_000_000))
            try await store.insertGrant(grant)
            grants[account] = grant.id
        }
        #expect(try await store.grants(retirableBy: "rds.us-east-1.amazonaws.com", keyAccount: nil).count == 2)
        for (account, id) in grants {
            #expect(try await store.grants(retirableBy: "rds.us-east-1.amazonaws.com", keyAccount: account).map(\.id) == [id])
        }
        #expect(try await store.grants(retirableBy: "rds.us-east-1.amazonaws.com", keyAccount: "999999999999").isEmpty)
    }
}
