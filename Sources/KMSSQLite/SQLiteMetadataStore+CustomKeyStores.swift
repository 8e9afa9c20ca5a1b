public import Foundation
import GRDB
public import KMS

/// Custom key stores and the link of each of their KMS keys to its token object.
extension SQLiteMetadataStore: CustomKeyStoreMetadata {
    static func registerCustomKeyStoreMigration(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("custom-key-stores") { db in
            try db.execute(
                sql: """
                    CREATE TABLE custom_key_stores (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        store_id TEXT NOT NULL UNIQUE,
                        account_id TEXT NOT NULL,
                        name TEXT NOT NULL,
                        cluster_id TEXT NOT NULL,
                        trust_anchor_certificate TEXT NOT NULL,
                        sealed_password BLOB NOT NULL,
                        creation_date REAL NOT NULL,
                        connect_requested INTEGER NOT NULL DEFAULT 0,
                        UNIQUE (account_id, name)
                    );
                    CREATE TABLE custom_key_store_keys (
                        key_id TEXT PRIMARY KEY REFERENCES keys(key_id),
                        store_id TEXT NOT NULL REFERENCES custom_key_stores(store_id),
                        object_label TEXT,
                        object_id BLOB,
                        xks_key_id TEXT
                    ) WITHOUT ROWID;
                    CREATE INDEX custom_key_store_keys_store ON custom_key_store_keys(store_id);
                    CREATE UNIQUE INDEX custom_key_store_keys_xks ON custom_key_store_keys(store_id, xks_key_id) WHERE xks_key_id IS NOT NULL;
                    """)
        }
    }

    public func insertCustomKeyStore(_ store: CustomKeyStoreRecord) async throws {
        try await insertUnique { db in
            try db.execute(
                sql: """
                    INSERT INTO custom_key_stores (store_id, account_id, name, cluster_id, trust_anchor_certificate, sealed_password,
                    creation_date, connect_requested) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    store.id, store.accountID, store.name, store.clusterID, store.trustAnchorCertificate,
                    Data(store.sealedPassword.iv + store.sealedPassword.ciphertextAndTag), store.creationDate.timeIntervalSince1970,
                    store.connectRequested,
                ])
        }
    }

    public func customKeyStore(_ id: String) async throws -> CustomKeyStoreRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM custom_key_stores WHERE store_id = ?", arguments: [id]).map(Self.customKeyStoreRecord)
        }
    }

    public func customKeyStore(named name: String, account: String) async throws -> CustomKeyStoreRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM custom_key_stores WHERE account_id = ? AND name = ?", arguments: [account, name])
                .map(Self.customKeyStoreRecord)
        }
    }

    public func customKeyStore(usingCluster clusterID: String) async throws -> CustomKeyStoreRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM custom_key_stores WHERE cluster_id = ? LIMIT 1", arguments: [clusterID])
                .map(Self.customKeyStoreRecord)
        }
    }

    public func customKeyStores(account: String) async throws -> [CustomKeyStoreRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM custom_key_stores WHERE account_id = ? ORDER BY seq", arguments: [account])
                .map(Self.customKeyStoreRecord)
        }
    }

    public func customKeyStoresToReconnect() async throws -> [CustomKeyStoreRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM custom_key_stores WHERE connect_requested = 1 ORDER BY seq").map(Self.customKeyStoreRecord)
        }
    }

    public func updateCustomKeyStore(_ store: CustomKeyStoreRecord) async throws {
        try await insertUnique { db in
            try db.execute(
                sql: """
                    UPDATE custom_key_stores SET name = ?, cluster_id = ?, trust_anchor_certificate = ?, sealed_password = ?,
                    connect_requested = ? WHERE store_id = ?
                    """,
                arguments: [
                    store.name, store.clusterID, store.trustAnchorCertificate,
                    Data(store.sealedPassword.iv + store.sealedPassword.ciphertextAndTag), store.connectRequested, store.id,
                ])
        }
    }

    public func deleteCustomKeyStore(_ id: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM custom_key_stores WHERE store_id = ?", arguments: [id])
        }
    }

    public func insertKey(_ key: KeyRecord, backingKey: BackingKeyRecord, tags: [Tag], in link: CustomKeyStoreKeyRecord) async throws {
        try await insertUnique { db in
            try Self.insert(key, into: db)
            try Self.insert(backingKey, into: db)
            for tag in tags { try Self.put(tag, on: key.id, into: db) }
            let (label, id): (String?, Data?) =
                switch link.object {
                case .label(let label): (label, nil)
                case .id(let id): (nil, Data(id))
                }
            try db.execute(
                sql: "INSERT INTO custom_key_store_keys (key_id, store_id, object_label, object_id, xks_key_id) VALUES (?, ?, ?, ?, ?)",
                arguments: [link.keyID.storageKey, link.storeID, label, id, link.xksKeyID])
        }
    }

    public func customKeyStoreKey(_ keyID: KeyID) async throws -> CustomKeyStoreKeyRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM custom_key_store_keys WHERE key_id = ?", arguments: [keyID.storageKey])
                .map(Self.customKeyStoreKeyRecord)
        }
    }

    public func customKeyStoreKey(store storeID: String, xksKeyID: String) async throws -> CustomKeyStoreKeyRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM custom_key_store_keys WHERE store_id = ? AND xks_key_id = ?", arguments: [storeID, xksKeyID])
                .map(Self.customKeyStoreKeyRecord)
        }
    }

    public func keyCount(inCustomKeyStore storeID: String) async throws -> Int {
        try await read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM custom_key_store_keys WHERE store_id = ?", arguments: [storeID]) ?? 0
        }
    }

    private static func customKeyStoreRecord(_ row: Row) throws -> CustomKeyStoreRecord {
        let sealed = Array(row["sealed_password"] as Data)
        return CustomKeyStoreRecord(
            id: row["store_id"], accountID: row["account_id"], name: row["name"], clusterID: row["cluster_id"],
            trustAnchorCertificate: row["trust_anchor_certificate"],
            sealedPassword: SealedData(iv: Array(sealed.prefix(12)), ciphertextAndTag: Array(sealed.dropFirst(12))),
            creationDate: Date(timeIntervalSince1970: row["creation_date"]), connectRequested: row["connect_requested"])
    }

    private static func customKeyStoreKeyRecord(_ row: Row) throws -> CustomKeyStoreKeyRecord {
        guard let id = KeyID(storageKey: row["key_id"] as String) else {
            throw KMSError(.internalFailure, "The metadata store holds a custom key store key row it cannot read.")
        }
        let object: TokenObjectSelector
        if let label = row["object_label"] as String? {
            object = .label(label)
        } else if let objectID = row["object_id"] as Data? {
            object = .id(Array(objectID))
        } else {
            throw KMSError(.internalFailure, "The metadata store holds a custom key store key row without its token object.")
        }
        return CustomKeyStoreKeyRecord(keyID: id, storeID: row["store_id"], object: object, xksKeyID: row["xks_key_id"])
    }
}
