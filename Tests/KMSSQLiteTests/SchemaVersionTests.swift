import Foundation
import GRDB
import KMS
@testable import KMSSQLite
import Testing
import TrentTestSupport

/// A store a newer Trent migrated is refused, never served with a schema this binary does not know (a downgrade
/// is a restore of the backup taken before the upgrade).
@Suite struct SchemaVersionTests {
    @Test func aStoreMigratedByANewerTrentIsRefused() async throws {
        let path = try TestHSM.shared().makeDatabasePath()
        _ = try SQLiteMetadataStore(path: path)
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('from-a-newer-trent')") }
        try queue.close()
        let error = try #require(throws: KMSError.self) { try SQLiteMetadataStore(path: path) }
        #expect(error.message.contains("was migrated by a newer Trent ('from-a-newer-trent')"), "\(error.message)")
        // A store this binary knows still opens.
        try await DatabaseQueue(path: path).write { db in
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'from-a-newer-trent'")
        }
        _ = try SQLiteMetadataStore(path: path)
    }

    /// A store from before Regions: its keys and aliases become the configured default Region's, and alias names
    /// are then unique per Region.
    @Test func aStoreFromBeforeRegionsKeepsItsKeysInTheDefaultRegion() async throws {
        let path = try TestHSM.shared().makeDatabasePath()
        let account = "111122223333"
        let id = KeyID()
        let queue = try DatabaseQueue(path: path)
        try SQLiteMetadataStore.migrations.migrate(queue, upTo: "heartbeat")
        try await queue.write { db in
            try db.execute(
                sql: """
                    INSERT INTO keys (key_id, account_id, creation_date, description, key_spec, key_usage, origin, key_manager,
                        state, policy, current_version)
                        VALUES (?, ?, 0, 'from before Regions', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS', 'CUSTOMER', 'Enabled', '{}', 1);
                    INSERT INTO aliases (account_id, name, key_id, creation_date, last_updated_date) VALUES (?, 'alias/old', ?, 0, 0);
                    """,
                arguments: [id.description, account, account, id.description])
        }
        try queue.close()

        let store = try SQLiteMetadataStore(path: path, defaultRegion: "eu-west-1")
        let key = try #require(try await store.key(id))
        #expect(key.region == "eu-west-1")
        #expect(key.description == "from before Regions")
        #expect(try await store.listKeys(account: account, region: "eu-west-1", after: nil, limit: 10).items.map(\.id) == [id])
        #expect(try await store.listKeys(account: account, region: "us-east-1", after: nil, limit: 10).items.isEmpty)
        let alias = try #require(try await store.alias(named: "alias/old", account: account, region: "eu-west-1"))
        #expect(alias.targetKeyID == id && alias.region == "eu-west-1")
        #expect(try await store.alias(named: "alias/old", account: account, region: "us-east-1") == nil)
        // The same name in another Region is another alias.
        try await store.insertAlias(
            AliasRecord(name: "alias/old", accountID: account, region: "us-west-2", targetKeyID: id, creationDate: Date(), lastUpdatedDate: Date()))
        await #expect(throws: MetadataStoreError.self) {
            try await store.insertAlias(
                AliasRecord(name: "alias/old", accountID: account, region: "eu-west-1", targetKeyID: id, creationDate: Date(), lastUpdatedDate: Date()))
        }
        #expect(try await store.listAliases(account: account, region: "us-west-2", for: nil, after: nil, limit: 10).items.map(\.name) == ["alias/old"])
    }
}

/// The key-material-ids migration: backing keys of a store made before it get a key material id each, imported
/// material its key's expiry, and everything else stays.
@Suite struct KeyMaterialIDMigrationTests {
    @Test func backingKeysOfAnEarlierStoreGetKeyMaterialIDs() async throws {
        let path = try TestHSM.shared().makeDatabasePath()
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        let id = KeyID()
        let key = KeyRecord(
            id: id, accountID: "111122223333", region: "us-east-1", creationDate: date, description: "d", keySpec: .symmetricDefault,
            keyUsage: .encryptDecrypt, origin: .external, keyManager: .customer, state: .pendingImport, policy: "{}", currentVersion: 1)
        let backing = BackingKeyRecord(
            keyID: id, version: 1, wrappedKey: Array(repeating: 7, count: 40), binding: Array(repeating: 3, count: 40),
            wrappingKeyLabel: "domain", creationDate: date)
        let validTo = Date(timeIntervalSince1970: 1_900_000_000)
        let store = try SQLiteMetadataStore(path: path)
        try await store.insertKey(key, backingKey: nil, tags: [])
        _ = try await store.storeImportedMaterial(backing, expirationModel: .expires, validTo: validTo, if: .any)
        // Back to the schema before the migration.
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            try db.execute(
                sql: """
                    DROP INDEX backing_keys_valid_to;
                    ALTER TABLE backing_keys DROP COLUMN material_id;
                    ALTER TABLE backing_keys DROP COLUMN material_description;
                    ALTER TABLE backing_keys DROP COLUMN expiration_model;
                    ALTER TABLE backing_keys DROP COLUMN valid_to;
                    DELETE FROM grdb_migrations WHERE identifier = 'key-material-ids';
                    """)
        }
        try queue.close()
        let migrated = try #require(try await SQLiteMetadataStore(path: path).backingKey(id, version: 1))
        #expect(KeyMaterialID.isWellFormed(migrated.materialID), "\(migrated.materialID)")
        #expect(migrated.materialID != backing.materialID)
        #expect(migrated.wrappedKey == backing.wrappedKey)
        #expect(migrated.materialDescription == nil)
        #expect(migrated.expirationModel == .expires && migrated.validTo == validTo)
    }
}
