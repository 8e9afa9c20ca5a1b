public import Foundation
import GRDB
public import KMS

/// The embedded metadata store: one SQLite file in WAL mode with `synchronous=FULL`, so every
/// acknowledged change is on disk before the call returns, and `secure_delete`, so destroyed key material
/// (wrapped as it is) is overwritten rather than left in free pages.
public final class SQLiteMetadataStore: MetadataStore {
    private let database: DatabasePool
    public let path: String

    public init(path: String) throws {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        configuration.label = "trent.metadata"
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
        } catch {
            throw KMSError(.internalFailure, "Cannot open the metadata store at \(path): \(error)", cause: error)
        }
        self.path = path
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: keys, backing keys, aliases, tags") { db in
            try db.execute(
                sql: """
                    CREATE TABLE keys (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        key_id TEXT NOT NULL UNIQUE,
                        account_id TEXT NOT NULL,
                        creation_date REAL NOT NULL,
                        description TEXT NOT NULL,
                        key_spec TEXT NOT NULL,
                        key_usage TEXT NOT NULL,
                        origin TEXT NOT NULL,
                        key_manager TEXT NOT NULL,
                        state TEXT NOT NULL,
                        deletion_date REAL,
                        pending_window_days INTEGER,
                        policy TEXT NOT NULL,
                        current_version INTEGER NOT NULL
                    );
                    CREATE INDEX keys_deletion ON keys(deletion_date) WHERE deletion_date IS NOT NULL;
                    CREATE TABLE backing_keys (
                        key_id TEXT NOT NULL REFERENCES keys(key_id),
                        version INTEGER NOT NULL,
                        wrapped_key BLOB NOT NULL,
                        binding BLOB NOT NULL,
                        wrapping_key_label TEXT NOT NULL,
                        creation_date REAL NOT NULL,
                        nonces_reserved INTEGER NOT NULL,
                        PRIMARY KEY (key_id, version)
                    ) WITHOUT ROWID;
                    CREATE TABLE aliases (
                        name TEXT PRIMARY KEY,
                        key_id TEXT NOT NULL REFERENCES keys(key_id),
                        creation_date REAL NOT NULL,
                        last_updated_date REAL NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX aliases_key ON aliases(key_id);
                    CREATE TABLE tags (
                        key_id TEXT NOT NULL REFERENCES keys(key_id),
                        tag_key TEXT NOT NULL,
                        tag_value TEXT NOT NULL,
                        PRIMARY KEY (key_id, tag_key)
                    ) WITHOUT ROWID;
                    """)
        }
        return migrator
    }

    // MARK: Keys

    public func insertKey(_ key: KeyRecord, backingKey: BackingKeyRecord, tags: [Tag]) async throws {
        try await write { db in
            try Self.insert(key, into: db)
            try Self.insert(backingKey, into: db)
            for tag in tags { try Self.put(tag, on: key.id, into: db) }
        }
    }

    public func key(_ id: KeyID) async throws -> KeyRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM keys WHERE key_id = ?", arguments: [id.description]).map(Self.keyRecord)
        }
    }

    public func updateKey(_ key: KeyRecord) async throws {
        try await write { db in
            try db.execute(
                sql: """
                    UPDATE keys SET description = ?, state = ?, deletion_date = ?, pending_window_days = ?, policy = ?,
                    current_version = MAX(current_version, ?) WHERE key_id = ?
                    """,
                arguments: [
                    key.description, key.state.rawValue, key.deletionDate?.timeIntervalSince1970, key.pendingWindowInDays,
                    key.policy, Int64(key.currentVersion), key.id.description,
                ])
        }
    }

    public func listKeys(after marker: String?, limit: Int) async throws -> Page<KeyRecord> {
        let start = try marker.map { text throws(MetadataStoreError) in try Self.decodeMarker(text, as: Int64.self) } ?? 0
        return try await read { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT * FROM keys WHERE seq > ? ORDER BY seq LIMIT ?", arguments: [start, limit + 1])
            let page = rows.prefix(limit)
            let next: String? = rows.count > limit ? page.last.map { Self.encodeMarker(String($0["seq"] as Int64)) } : nil
            return Page(items: try page.map(Self.keyRecord), nextMarker: next)
        }
    }

    public func keysPendingDeletion(dueBy date: Date) async throws -> [KeyRecord] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM keys WHERE state = ? AND deletion_date <= ? ORDER BY deletion_date",
                arguments: [KeyState.pendingDeletion.rawValue, date.timeIntervalSince1970]
            ).map(Self.keyRecord)
        }
    }

    public func destroyKey(_ id: KeyID) async throws {
        try await write { db in
            for table in ["tags", "aliases", "backing_keys", "keys"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE key_id = ?", arguments: [id.description])
            }
        }
        // Move the overwritten pages out of the write-ahead log too, so no copy of the EKTs stays behind.
        _ = try? await database.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
    }

    // MARK: Backing keys

    public func backingKey(_ keyID: KeyID, version: UInt32) async throws -> BackingKeyRecord? {
        try await read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM backing_keys WHERE key_id = ? AND version = ?",
                arguments: [keyID.description, Int64(version)]
            ).map(Self.backingKeyRecord)
        }
    }

    public func addBackingKey(_ backingKey: BackingKeyRecord) async throws {
        try await write { db in
            try Self.insert(backingKey, into: db)
            try db.execute(
                sql: "UPDATE keys SET current_version = MAX(current_version, ?) WHERE key_id = ?",
                arguments: [Int64(backingKey.version), backingKey.keyID.description])
        }
    }

    public func reserveNonces(_ keyID: KeyID, version: UInt32, upTo reserved: UInt64) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE backing_keys SET nonces_reserved = MAX(nonces_reserved, ?) WHERE key_id = ? AND version = ?",
                arguments: [Int64(clamping: reserved), keyID.description, Int64(version)])
        }
    }

    // MARK: Aliases

    public func alias(named name: String) async throws -> AliasRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM aliases WHERE name = ?", arguments: [name]).map(Self.aliasRecord)
        }
    }

    public func insertAlias(_ alias: AliasRecord) async throws {
        do {
            try await write { db in
                try db.execute(
                    sql: "INSERT INTO aliases (name, key_id, creation_date, last_updated_date) VALUES (?, ?, ?, ?)",
                    arguments: [
                        alias.name, alias.targetKeyID.description, alias.creationDate.timeIntervalSince1970,
                        alias.lastUpdatedDate.timeIntervalSince1970,
                    ])
            }
        } catch let error as KMSError {
            if let cause = error.cause as? DatabaseError, cause.resultCode == .SQLITE_CONSTRAINT {
                throw MetadataStoreError.duplicate
            }
            throw error
        }
    }

    public func updateAlias(_ alias: AliasRecord) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE aliases SET key_id = ?, last_updated_date = ? WHERE name = ?",
                arguments: [alias.targetKeyID.description, alias.lastUpdatedDate.timeIntervalSince1970, alias.name])
        }
    }

    public func deleteAlias(named name: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM aliases WHERE name = ?", arguments: [name]) }
    }

    public func listAliases(for keyID: KeyID?, after marker: String?, limit: Int) async throws -> Page<AliasRecord> {
        let start = try marker.map { text throws(MetadataStoreError) in try Self.decodeMarker(text, as: String.self) } ?? ""
        return try await read { db in
            let rows: [Row]
            if let keyID {
                rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM aliases WHERE key_id = ? AND name > ? ORDER BY name LIMIT ?",
                    arguments: [keyID.description, start, limit + 1])
            } else {
                rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM aliases WHERE name > ? ORDER BY name LIMIT ?", arguments: [start, limit + 1])
            }
            let page = try rows.prefix(limit).map(Self.aliasRecord)
            let next = rows.count > limit ? page.last.map { Self.encodeMarker($0.name) } : nil
            return Page(items: page, nextMarker: next)
        }
    }

    // MARK: Tags

    public func tags(of keyID: KeyID) async throws -> [Tag] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT tag_key, tag_value FROM tags WHERE key_id = ? ORDER BY tag_key", arguments: [keyID.description]
            ).map { Tag(key: $0["tag_key"], value: $0["tag_value"]) }
        }
    }

    public func putTags(_ tags: [Tag], on keyID: KeyID) async throws {
        try await write { db in
            for tag in tags { try Self.put(tag, on: keyID, into: db) }
        }
    }

    public func removeTags(_ tagKeys: [String], from keyID: KeyID) async throws {
        try await write { db in
            for tagKey in tagKeys {
                try db.execute(sql: "DELETE FROM tags WHERE key_id = ? AND tag_key = ?", arguments: [keyID.description, tagKey])
            }
        }
    }

    // MARK: Rows

    private static func insert(_ key: KeyRecord, into db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO keys (key_id, account_id, creation_date, description, key_spec, key_usage, origin, key_manager,
                state, deletion_date, pending_window_days, policy, current_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                key.id.description, key.accountID, key.creationDate.timeIntervalSince1970, key.description,
                key.keySpec.rawValue, key.keyUsage.rawValue, key.origin.rawValue, key.keyManager.rawValue,
                key.state.rawValue, key.deletionDate?.timeIntervalSince1970, key.pendingWindowInDays, key.policy,
                Int64(key.currentVersion),
            ])
    }

    private static func insert(_ backingKey: BackingKeyRecord, into db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO backing_keys (key_id, version, wrapped_key, binding, wrapping_key_label, creation_date, nonces_reserved)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                backingKey.keyID.description, Int64(backingKey.version), Data(backingKey.wrappedKey), Data(backingKey.binding),
                backingKey.wrappingKeyLabel, backingKey.creationDate.timeIntervalSince1970, Int64(clamping: backingKey.noncesReserved),
            ])
    }

    private static func put(_ tag: Tag, on keyID: KeyID, into db: Database) throws {
        try db.execute(
            sql: "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?, ?, ?) ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
            arguments: [keyID.description, tag.key, tag.value])
    }

    private static func keyRecord(_ row: Row) throws -> KeyRecord {
        guard let id = KeyID(row["key_id"] as String),
            let keySpec = KeySpec(rawValue: row["key_spec"]), let keyUsage = KeyUsage(rawValue: row["key_usage"]),
            let origin = KeyOrigin(rawValue: row["origin"]), let keyManager = KeyManager(rawValue: row["key_manager"]),
            let state = KeyState(rawValue: row["state"])
        else {
            throw KMSError(.internalFailure, "The metadata store holds a key row it cannot read.")
        }
        return KeyRecord(
            id: id, accountID: row["account_id"], creationDate: Date(timeIntervalSince1970: row["creation_date"]),
            description: row["description"], keySpec: keySpec, keyUsage: keyUsage, origin: origin, keyManager: keyManager,
            state: state, deletionDate: (row["deletion_date"] as Double?).map(Date.init(timeIntervalSince1970:)),
            pendingWindowInDays: row["pending_window_days"], policy: row["policy"],
            currentVersion: UInt32(row["current_version"] as Int64))
    }

    private static func backingKeyRecord(_ row: Row) throws -> BackingKeyRecord {
        guard let id = KeyID(row["key_id"] as String) else {
            throw KMSError(.internalFailure, "The metadata store holds a backing-key row it cannot read.")
        }
        return BackingKeyRecord(
            keyID: id, version: UInt32(row["version"] as Int64), wrappedKey: Array(row["wrapped_key"] as Data),
            binding: Array(row["binding"] as Data), wrappingKeyLabel: row["wrapping_key_label"],
            creationDate: Date(timeIntervalSince1970: row["creation_date"]),
            noncesReserved: UInt64(max(0, row["nonces_reserved"] as Int64)))
    }

    private static func aliasRecord(_ row: Row) throws -> AliasRecord {
        guard let id = KeyID(row["key_id"] as String) else {
            throw KMSError(.internalFailure, "The metadata store holds an alias row it cannot read.")
        }
        return AliasRecord(
            name: row["name"], targetKeyID: id, creationDate: Date(timeIntervalSince1970: row["creation_date"]),
            lastUpdatedDate: Date(timeIntervalSince1970: row["last_updated_date"]))
    }

    // MARK: Markers and errors

    private static func encodeMarker(_ value: String) -> String { Data(value.utf8).base64EncodedString() }

    private static func decodeMarker<T: LosslessStringConvertible>(_ marker: String, as type: T.Type) throws(MetadataStoreError) -> T {
        guard let data = Data(base64Encoded: marker), let text = String(data: data, encoding: .utf8), let value = T(text) else {
            throw MetadataStoreError.invalidMarker
        }
        return value
    }

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await database.read(body)
        } catch let error as KMSError {
            throw error
        } catch {
            throw KMSError(.internalFailure, "The metadata store could not be read.", cause: error)
        }
    }

    private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await database.write(body)
        } catch let error as KMSError {
            throw error
        } catch {
            throw KMSError(.internalFailure, "The metadata store could not be written.", cause: error)
        }
    }
}
