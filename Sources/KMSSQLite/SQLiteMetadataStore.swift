public import Foundation
import GRDB
public import KMS
import Metrics

/// The embedded metadata store: one SQLite file in WAL mode with `synchronous=FULL`, so every
/// acknowledged change is on disk before the call returns, and `secure_delete`, so destroyed key material
/// (wrapped as it is) is overwritten rather than left in free pages.
public final class SQLiteMetadataStore: MetadataStore {
    private let database: DatabasePool
    public let path: String
    /// Rows the hot path reads, kept until anything commits (see ``ReadCache``).
    private let cache: CachedReads
    private let reservations = GroupCommit<NonceReservation>()
    private let watch: DatabaseQueue?

    /// - Parameters:
    ///   - defaultRegion: the Region that keys and aliases of a store from before Regions are assigned to when it
    ///     is migrated (the configured `service.region`).
    ///   - cacheCapacity: entries per cached table (0 turns the read cache off).
    public init(path: String, defaultRegion: String = "us-east-1", cacheCapacity: Int = 200_000) throws {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        configuration.label = "trent.metadata"
        // Admin commands (`trent identity`) write while the server runs: wait for the other writer, never fail at once.
        configuration.busyMode = .timeout(10)
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            // GRDB turns WAL on for the pool's writer *after* `prepareDatabase` ran, and sets `synchronous = NORMAL`
            // with it: in WAL mode that commits without an fsync, so an acknowledged change could be lost to a power
            // cut, and a failed fsync went unnoticed (CreateKey answered 200 while fdatasync failed; found with
            // Tests/IOFaults). The pool has one writer connection for its whole life, so setting it back once is
            // enough; ``synchronousModes()`` lets the tests check it.
            try database.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
            // A store a newer Trent migrated holds what this one does not know: serving it could lose or misread it.
            let unknown = try database.read { db in try Self.unknownMigrations(db) }
            guard unknown.isEmpty else {
                throw KMSError(
                    .internalFailure,
                    "The metadata store at \(path) was migrated by a newer Trent (\(unknown.map { "'\($0)'" }.joined(separator: ", "))): run that version, or restore a backup taken before the upgrade.")
            }
            try Self.migrator(defaultRegion: defaultRegion).migrate(database)
        } catch let error as KMSError {
            throw error
        } catch {
            throw KMSError(.internalFailure, "Cannot open the metadata store at \(path): \(error)", cause: error)
        }
        self.path = path
        // The watch connection also writes nonce reservations: its own commits leave its data_version unchanged,
        // so the frequent reservations (the first use of every key after a start) invalidate only the rows they
        // change instead of the whole cache. Same durability settings as the pool.
        var watchConfiguration = Configuration()
        watchConfiguration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        watchConfiguration.label = "trent.metadata.watch"
        watchConfiguration.busyMode = .timeout(10)
        let watch = cacheCapacity > 0 ? try? DatabaseQueue(path: path, configuration: watchConfiguration) : nil
        self.watch = watch
        self.cache = CachedReads(watch: watch, capacity: cacheCapacity)
    }

    /// Number of rows in the read cache (tests).
    public var cachedRowCount: Int { cache.count }

    /// `PRAGMA synchronous` of the connections that write: the pool's writer and the watch connection (tests:
    /// both must be FULL, 2, so every commit is fsynced before it returns).
    func synchronousModes() async throws -> (writer: Int, watch: Int?) {
        let writer = try await database.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
        let watch = try await watch?.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
        return (writer, watch)
    }

    /// A read through the cache: checks that nothing committed since the cache was filled, then answers from it
    /// or reads SQLite and keeps the answer.
    private func cached<K: Hashable & Sendable, V: Sendable>(
        _ map: WritableKeyPath<ReadCache, [K: V]>, _ key: K, _ body: @escaping @Sendable (Database) throws -> V
    ) async throws -> V {
        guard let generation = cache.check() else { return try await read(body) }
        if let hit = cache.lookup(map, key) { return hit }
        let backingGeneration = cache.backingGeneration
        let value = try await read(body)
        cache.keep(map, key, value, readUnder: generation, backingGeneration: backingGeneration)
        return value
    }

    /// Migrations a store has that this binary does not know, sorted: a newer Trent migrated it.
    static func unknownMigrations(_ db: Database) throws -> [String] {
        try migrations.appliedIdentifiers(db).subtracting(migrations.migrations).sorted()
    }

    /// The migrations, to read which a store has (not to run: running them needs the default Region).
    static var migrations: DatabaseMigrator { migrator(defaultRegion: "") }

    static func migrator(defaultRegion: String) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: keys, backing keys, aliases, tags, grants, identities") { db in
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
                        current_version INTEGER NOT NULL,
                        rotation_period_days INTEGER,
                        next_rotation_date REAL
                    );
                    CREATE INDEX keys_rotation ON keys(next_rotation_date) WHERE next_rotation_date IS NOT NULL;
                    CREATE INDEX keys_deletion ON keys(deletion_date) WHERE deletion_date IS NOT NULL;
                    CREATE TABLE backing_keys (
                        key_id TEXT NOT NULL REFERENCES keys(key_id),
                        version INTEGER NOT NULL,
                        wrapped_key BLOB NOT NULL,
                        binding BLOB NOT NULL,
                        wrapping_key_label TEXT NOT NULL,
                        creation_date REAL NOT NULL,
                        nonces_reserved INTEGER NOT NULL,
                        rotation_type TEXT,
                        PRIMARY KEY (key_id, version)
                    ) WITHOUT ROWID;
                    CREATE TABLE aliases (
                        account_id TEXT NOT NULL,
                        name TEXT NOT NULL,
                        key_id TEXT NOT NULL REFERENCES keys(key_id),
                        creation_date REAL NOT NULL,
                        last_updated_date REAL NOT NULL,
                        PRIMARY KEY (account_id, name)
                    ) WITHOUT ROWID;
                    CREATE INDEX aliases_key ON aliases(key_id);
                    CREATE TABLE tags (
                        key_id TEXT NOT NULL REFERENCES keys(key_id),
                        tag_key TEXT NOT NULL,
                        tag_value TEXT NOT NULL,
                        PRIMARY KEY (key_id, tag_key)
                    ) WITHOUT ROWID;
                    CREATE INDEX keys_account ON keys(account_id, seq);
                    CREATE TABLE grants (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        grant_id TEXT NOT NULL UNIQUE,
                        key_id TEXT NOT NULL REFERENCES keys(key_id),
                        name TEXT,
                        grantee TEXT NOT NULL,
                        retiring TEXT,
                        operations TEXT NOT NULL,
                        constraints TEXT,
                        issuing_account TEXT NOT NULL,
                        creation_date REAL NOT NULL
                    );
                    CREATE INDEX grants_key ON grants(key_id);
                    CREATE INDEX grants_retiring ON grants(retiring);
                    CREATE TABLE key_last_usage (
                        key_id TEXT PRIMARY KEY REFERENCES keys(key_id),
                        operation TEXT NOT NULL,
                        timestamp REAL NOT NULL,
                        request_id TEXT,
                        event_id TEXT
                    ) WITHOUT ROWID;
                    CREATE TABLE accounts (
                        account_id TEXT PRIMARY KEY,
                        name TEXT NOT NULL,
                        creation_date REAL NOT NULL
                    ) WITHOUT ROWID;
                    CREATE TABLE principals (
                        arn TEXT PRIMARY KEY,
                        kind TEXT NOT NULL,
                        account_id TEXT REFERENCES accounts(account_id),
                        name TEXT NOT NULL,
                        tags TEXT NOT NULL,
                        creation_date REAL NOT NULL
                    ) WITHOUT ROWID;
                    CREATE TABLE access_keys (
                        access_key_id TEXT PRIMARY KEY,
                        principal_arn TEXT NOT NULL REFERENCES principals(arn),
                        sealed_secret BLOB NOT NULL,
                        status TEXT NOT NULL,
                        creation_date REAL NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX access_keys_principal ON access_keys(principal_arn);
                    CREATE TABLE identity_policies (
                        principal_arn TEXT NOT NULL REFERENCES principals(arn),
                        name TEXT NOT NULL,
                        document TEXT NOT NULL,
                        PRIMARY KEY (principal_arn, name)
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("asymmetric-keys") { db in
            try db.execute(sql: "ALTER TABLE backing_keys ADD COLUMN public_key BLOB")
        }
        migrator.registerMigration("imported-key-material") { db in
            try db.execute(
                sql: """
                    ALTER TABLE keys ADD COLUMN expiration_model TEXT;
                    ALTER TABLE keys ADD COLUMN valid_to REAL;
                    CREATE INDEX keys_valid_to ON keys(valid_to) WHERE valid_to IS NOT NULL;
                    """)
        }
        registerCustomKeyStoreMigration(in: &migrator)
        // Secret backing keys become bound by the token's sealing key: the ones that exist now (with an EKT, not key
        // pairs, which always were) are listed for the service to carry over once. Listed here, in the migration, so
        // that the list is made once and a row written later can never join it.
        migrator.registerMigration("sealed-bindings") { db in
            try db.execute(
                sql: """
                    CREATE TABLE legacy_bindings (
                        key_id TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        PRIMARY KEY (key_id, version)
                    ) WITHOUT ROWID;
                    INSERT INTO legacy_bindings (key_id, version)
                        SELECT key_id, version FROM backing_keys WHERE public_key IS NULL AND length(wrapped_key) > 0;
                    """)
        }
        // One row, rewritten by every readiness probe: proof that the store accepts a committed write.
        migrator.registerMigration("heartbeat") { db in
            try db.execute(sql: "CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), written_at REAL NOT NULL)")
        }
        // Keys and aliases live in a Region; what exists already is the default Region's. Alias names become unique
        // per account and Region (a new primary key, so the table is rebuilt).
        migrator.registerMigration("regions") { db in
            try db.execute(
                sql: """
                    ALTER TABLE keys ADD COLUMN region TEXT NOT NULL DEFAULT '';
                    UPDATE keys SET region = ?;
                    CREATE INDEX keys_account_region ON keys(account_id, region, seq);
                    CREATE TABLE aliases_by_region (
                        account_id TEXT NOT NULL,
                        region TEXT NOT NULL,
                        name TEXT NOT NULL,
                        key_id TEXT NOT NULL REFERENCES keys(key_id),
                        creation_date REAL NOT NULL,
                        last_updated_date REAL NOT NULL,
                        PRIMARY KEY (account_id, region, name)
                    ) WITHOUT ROWID;
                    INSERT INTO aliases_by_region (account_id, region, name, key_id, creation_date, last_updated_date)
                        SELECT account_id, ?, name, key_id, creation_date, last_updated_date FROM aliases;
                    DROP TABLE aliases;
                    ALTER TABLE aliases_by_region RENAME TO aliases;
                    CREATE INDEX aliases_key ON aliases(key_id);
                    """,
                arguments: [defaultRegion, defaultRegion])
        }
        // Every backing-key version gets the key material id the API shows (random, as new versions get theirs), and
        // imported material its own description and expiry (a key's current material's expiry stays on the key too).
        migrator.registerMigration("key-material-ids") { db in
            try db.execute(
                sql: """
                    ALTER TABLE backing_keys ADD COLUMN material_id TEXT;
                    ALTER TABLE backing_keys ADD COLUMN material_description TEXT;
                    ALTER TABLE backing_keys ADD COLUMN expiration_model TEXT;
                    ALTER TABLE backing_keys ADD COLUMN valid_to REAL;
                    UPDATE backing_keys SET material_id = lower(hex(randomblob(32))) WHERE material_id IS NULL;
                    UPDATE backing_keys SET expiration_model = (SELECT expiration_model FROM keys WHERE keys.key_id = backing_keys.key_id),
                        valid_to = (SELECT valid_to FROM keys WHERE keys.key_id = backing_keys.key_id)
                        WHERE length(wrapped_key) > 0;
                    CREATE INDEX backing_keys_valid_to ON backing_keys(valid_to) WHERE valid_to IS NOT NULL;
                    """)
        }
        // Multi-Region keys: a replica's backing keys are those of the related key its material was made for.
        migrator.registerMigration("multi-Region keys") { db in
            try db.execute(
                sql: """
                    ALTER TABLE keys ADD COLUMN material_owner TEXT;
                    ALTER TABLE keys ADD COLUMN multi_region_key_type TEXT;
                    CREATE INDEX keys_material_owner ON keys(material_owner) WHERE material_owner IS NOT NULL;
                    """)
        }
        return migrator
    }

    /// The readiness probe's write: one tiny committed (fsynced) transaction on a table of its own. It goes through
    /// the watch connection, whose own commits leave the read cache alone, so probes every few seconds cost no
    /// cache refills. Throws what the write threw.
    public func writeHeartbeat() async throws {
        let now = Date().timeIntervalSince1970
        try await writeOnWatch(invalidating: []) { db in
            try db.execute(
                sql: "INSERT INTO heartbeat (id, written_at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET written_at = excluded.written_at",
                arguments: [now])
        }
    }

    // MARK: Keys

    public func insertKey(_ key: KeyRecord, backingKey: BackingKeyRecord?, tags: [Tag]) async throws {
        try await write { db in
            try Self.insert(key, into: db)
            if let backingKey { try Self.insert(backingKey, into: db) }
            for tag in tags { try Self.put(tag, on: key.id, into: db) }
            // A replica starts at its material's current version as it is now, even if a rotation came after the read.
            if key.materialOwner != key.id {
                try db.execute(
                    sql: "UPDATE keys SET current_version = MAX(current_version, (SELECT current_version FROM keys WHERE key_id = ?)) WHERE key_id = ?",
                    arguments: [key.materialOwner.storageKey, key.id.storageKey])
            }
        }
    }

    /// Inserts many keys with their first backing keys in one transaction (one sync for the batch), for bulk
    /// provisioning such as the benchmark's key-count scale test.
    public func insertKeys(_ keys: [(KeyRecord, BackingKeyRecord)]) async throws {
        try await write { db in
            for (key, backingKey) in keys {
                try Self.insert(key, into: db)
                try Self.insert(backingKey, into: db)
            }
        }
    }

    public func key(_ id: KeyID) async throws -> KeyRecord? {
        try await cached(\.keys, id) { db in
            try Row.fetchOne(db, sql: "SELECT * FROM keys WHERE key_id = ?", arguments: [id.storageKey]).map(Self.keyRecord)
        }
    }

    public func updateKey(_ id: KeyID, _ change: KeyChange, if condition: KeyCondition) async throws -> KeyRecord? {
        try await write { db in try Self.updateKey(id, set: Self.assignments(change), if: condition, in: db) }
    }

    /// The columns a change writes, as `column = ?` assignments with their values.
    private static func assignments(_ change: KeyChange) -> KeyAssignments {
        switch change {
        case .description(let description):
            return KeyAssignments("description = ?", [description])
        case .policy(let policy):
            return KeyAssignments("policy = ?", [policy])
        case .state(let state):
            return KeyAssignments("state = ?", [state.rawValue])
        case .deletionScheduled(let date, let days):
            return KeyAssignments(
                "state = ?, deletion_date = ?, pending_window_days = ?", [KeyState.pendingDeletion.rawValue, date.timeIntervalSince1970, days])
        case .replicaDeletionScheduled(let days):
            return KeyAssignments(
                "state = ?, deletion_date = NULL, pending_window_days = ?", [KeyState.pendingReplicaDeletion.rawValue, days])
        case .deletionCancelled:
            // Whether the key holds material is decided in the same statement, on the rows as they are then.
            return KeyAssignments(
                """
                state = CASE WHEN origin = ? AND (NOT EXISTS (SELECT 1 FROM backing_keys WHERE backing_keys.key_id = keys.key_id
                AND length(backing_keys.wrapped_key) > 0) OR EXISTS (SELECT 1 FROM backing_keys WHERE backing_keys.key_id = keys.key_id
                AND backing_keys.version <= keys.current_version AND length(backing_keys.wrapped_key) = 0)) THEN ? ELSE ? END,
                deletion_date = NULL, pending_window_days = NULL
                """,
                [KeyOrigin.external.rawValue, KeyState.pendingImport.rawValue, KeyState.disabled.rawValue])
        case .rotationSchedule(let schedule):
            return KeyAssignments(
                "rotation_period_days = ?, next_rotation_date = ?", [schedule?.periodInDays, schedule?.nextRotationDate.timeIntervalSince1970])
        }
    }

    /// The one conditional update of a key's row: the assignments apply only where the condition holds for the row
    /// as it is in this transaction (SQLite has a single writer; PostgreSQL re-evaluates an UPDATE's WHERE clause
    /// on the row version it locks, so the same statement is safe there with many nodes). Returns the row written.
    private static func updateKey(_ id: KeyID, set assignments: KeyAssignments, if condition: KeyCondition, in db: Database) throws -> KeyRecord? {
        var sql = "UPDATE keys SET \(assignments.sql) WHERE key_id = ?"
        var arguments = assignments.arguments + [id.storageKey]
        if let states = condition.states {
            let sorted = states.map(\.rawValue).sorted()
            sql += sorted.isEmpty ? " AND 0" : " AND state IN (\(databaseQuestionMarks(count: sorted.count)))"
            arguments += StatementArguments(sorted)
        }
        if let due = condition.rotationDueBy {
            sql += " AND rotation_period_days IS NOT NULL AND next_rotation_date IS NOT NULL AND next_rotation_date <= ?"
            arguments += [due.timeIntervalSince1970]
        }
        if let schedule = condition.rotationSchedule {
            // Dates are REAL seconds: equal to a millisecond (a Date read back need not be bit-identical).
            sql += " AND rotation_period_days = ? AND next_rotation_date IS NOT NULL AND ABS(next_rotation_date - ?) < 0.001"
            arguments += [schedule.periodInDays, schedule.nextRotationDate.timeIntervalSince1970]
        }
        if let expiry = condition.materialExpiringBy {
            sql += " AND valid_to IS NOT NULL AND valid_to <= ?"
            arguments += [expiry.timeIntervalSince1970]
        }
        if let version = condition.currentVersionBelow {
            sql += " AND current_version < ?"
            arguments += [Int64(version)]
        }
        try db.execute(sql: sql, arguments: arguments)
        guard db.changesCount > 0 else { return nil }
        return try Row.fetchOne(db, sql: "SELECT * FROM keys WHERE key_id = ?", arguments: [id.storageKey]).map(Self.keyRecord)
    }

    public func relatedKeys(of materialOwner: KeyID) async throws -> [KeyRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM keys WHERE material_owner = ? ORDER BY seq", arguments: [materialOwner.storageKey])
                .map(Self.keyRecord)
        }
    }

    public func updatePrimary(from primary: KeyID, to replica: KeyID) async throws -> Bool {
        try await write { db in
            let enabled = KeyState.enabled.rawValue
            try db.execute(
                sql: """
                    UPDATE keys SET multi_region_key_type = ?,
                    rotation_period_days = (SELECT rotation_period_days FROM keys WHERE key_id = ?),
                    next_rotation_date = (SELECT next_rotation_date FROM keys WHERE key_id = ?)
                    WHERE key_id = ? AND multi_region_key_type = ? AND state = ?
                    AND EXISTS (SELECT 1 FROM keys WHERE key_id = ? AND multi_region_key_type = ? AND state = ?)
                    """,
                arguments: [
                    MultiRegionKeyType.primary.rawValue, primary.storageKey, primary.storageKey, replica.storageKey,
                    MultiRegionKeyType.replica.rawValue, enabled, primary.storageKey, MultiRegionKeyType.primary.rawValue, enabled,
                ])
            guard db.changesCount == 1 else { return false }
            try db.execute(
                sql: "UPDATE keys SET multi_region_key_type = ?, rotation_period_days = NULL, next_rotation_date = NULL WHERE key_id = ?",
                arguments: [MultiRegionKeyType.replica.rawValue, primary.storageKey])
            return true
        }
    }

    public func listKeys(account: String, region: String, after marker: String?, limit: Int) async throws -> Page<KeyRecord> {
        let start = try marker.map { text throws(MetadataStoreError) in try Self.decodeMarker(text, as: Int64.self) } ?? 0
        return try await read { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT * FROM keys WHERE account_id = ? AND region = ? AND seq > ? ORDER BY seq LIMIT ?",
                arguments: [account, region, start, limit + 1])
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

    public func keysDueForRotation(dueBy date: Date) async throws -> [KeyRecord] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM keys WHERE next_rotation_date IS NOT NULL AND next_rotation_date <= ? ORDER BY next_rotation_date",
                arguments: [date.timeIntervalSince1970]
            ).map(Self.keyRecord)
        }
    }

    public func keysWithExpiringMaterial(dueBy date: Date) async throws -> [KeyRecord] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM keys WHERE key_id IN (SELECT key_id FROM backing_keys WHERE valid_to IS NOT NULL AND valid_to <= ?
                    AND length(wrapped_key) > 0) ORDER BY seq
                    """,
                arguments: [date.timeIntervalSince1970]
            ).map(Self.keyRecord)
        }
    }

    public func storeImportedMaterial(
        _ backingKey: BackingKeyRecord, expirationModel: ExpirationModel, validTo: Date?, if condition: KeyCondition
    ) async throws -> KeyRecord? {
        try await write { db in
            let version = Int64(backingKey.version)
            let model = expirationModel.rawValue
            let until = validTo?.timeIntervalSince1970
            // Decided on the row as it is: a staged version (after the current one) leaves the key as it is; otherwise the
            // key is Enabled once no other version it uses lacks material, and takes its current version's expiry.
            let assignments = KeyAssignments(
                """
                state = CASE WHEN ? > current_version THEN state WHEN EXISTS (SELECT 1 FROM backing_keys WHERE backing_keys.key_id = keys.key_id
                AND backing_keys.version <= keys.current_version AND backing_keys.version != ? AND length(backing_keys.wrapped_key) = 0)
                THEN ? ELSE ? END,
                expiration_model = CASE WHEN ? = current_version THEN ? ELSE expiration_model END,
                valid_to = CASE WHEN ? = current_version THEN ? ELSE valid_to END
                """,
                [version, version, KeyState.pendingImport.rawValue, KeyState.enabled.rawValue, version, model, version, until])
            guard let key = try Self.updateKey(backingKey.keyID, set: assignments, if: condition, in: db) else { return nil }
            // The version keeps its id, nonce count and, when none is given, its description.
            try db.execute(
                sql: """
                    INSERT INTO backing_keys (key_id, version, wrapped_key, binding, wrapping_key_label, creation_date, nonces_reserved,
                        material_id, material_description, expiration_model, valid_to, public_key)
                    VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)
                    ON CONFLICT (key_id, version) DO UPDATE SET wrapped_key = excluded.wrapped_key, binding = excluded.binding,
                    wrapping_key_label = excluded.wrapping_key_label, public_key = excluded.public_key,
                    material_description = coalesce(excluded.material_description, backing_keys.material_description),
                    expiration_model = excluded.expiration_model, valid_to = excluded.valid_to
                    """,
                arguments: [
                    backingKey.keyID.storageKey, version, Data(backingKey.wrappedKey), Data(backingKey.binding),
                    backingKey.wrappingKeyLabel, backingKey.creationDate.timeIntervalSince1970, backingKey.materialID,
                    backingKey.materialDescription, model, until, backingKey.publicKey.map { Data($0) },
                ])
            return key
        }
    }

    public func deleteImportedMaterial(of keyID: KeyID, version: UInt32, if condition: KeyCondition) async throws -> KeyRecord? {
        try await write { db in
            let version = Int64(version)
            // An expiry condition is the version's own (checked in this transaction, so a re-import with a later
            // ValidTo meanwhile keeps its material).
            var keyCondition = condition
            if let expiry = condition.materialExpiringBy {
                keyCondition.materialExpiringBy = nil
                let due = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT 1 FROM backing_keys WHERE key_id = ? AND version = ? AND valid_to IS NOT NULL AND valid_to <= ?
                        AND length(wrapped_key) > 0
                        """,
                    arguments: [keyID.storageKey, version, expiry.timeIntervalSince1970])
                guard due != nil else { return nil }
            }
            // A staged version leaves the key as it is; otherwise a key pending deletion stays so and any other becomes
            // PendingImport (decided on the row being written).
            let assignments = KeyAssignments(
                """
                state = CASE WHEN ? > current_version OR state = ? THEN state ELSE ? END,
                expiration_model = CASE WHEN ? = current_version THEN NULL ELSE expiration_model END,
                valid_to = CASE WHEN ? = current_version THEN NULL ELSE valid_to END
                """,
                [version, KeyState.pendingDeletion.rawValue, KeyState.pendingImport.rawValue, version, version])
            guard let key = try Self.updateKey(keyID, set: assignments, if: keyCondition, in: db) else { return nil }
            if version > Int64(key.currentVersion) {
                // Staged material was never used: it goes, and other material may be staged in its place.
                try db.execute(sql: "DELETE FROM backing_keys WHERE key_id = ? AND version = ?", arguments: [keyID.storageKey, version])
            } else {
                try db.execute(
                    sql: "UPDATE backing_keys SET wrapped_key = X'', expiration_model = NULL, valid_to = NULL WHERE key_id = ? AND version = ?",
                    arguments: [keyID.storageKey, version])
            }
            return key
        }
    }

    public func makeStagedMaterialCurrent(_ keyID: KeyID, version: UInt32, on date: Date, if condition: KeyCondition) async throws -> KeyRecord? {
        try await write { db in
            let version = Int64(version)
            // The key takes the staged version's expiry with it.
            let assignments = KeyAssignments(
                """
                current_version = ?,
                expiration_model = (SELECT expiration_model FROM backing_keys WHERE backing_keys.key_id = keys.key_id AND backing_keys.version = ?),
                valid_to = (SELECT valid_to FROM backing_keys WHERE backing_keys.key_id = keys.key_id AND backing_keys.version = ?)
                """,
                [version, version, version])
            var staging = condition
            staging.currentVersionBelow = UInt32(clamping: version)
            guard let key = try Self.updateKey(keyID, set: assignments, if: staging, in: db) else { return nil }
            try db.execute(
                sql: "UPDATE backing_keys SET rotation_type = ?, creation_date = ? WHERE key_id = ? AND version = ?",
                arguments: [RotationType.onDemand.rawValue, date.timeIntervalSince1970, keyID.storageKey, version])
            return key
        }
    }

    public func destroyKey(_ id: KeyID) async throws {
        try await write { db in
            // The material of related multi-Region keys outlives any one of them: it moves to the oldest one left.
            // Its binding names the id the related keys share, so it still verifies there.
            if let successor = try String.fetchOne(
                db, sql: "SELECT key_id FROM keys WHERE material_owner = ? AND key_id != ? ORDER BY seq LIMIT 1",
                arguments: [id.storageKey, id.storageKey])
            {
                try db.execute(sql: "UPDATE backing_keys SET key_id = ? WHERE key_id = ?", arguments: [successor, id.storageKey])
                try db.execute(sql: "UPDATE keys SET material_owner = ? WHERE material_owner = ?", arguments: [successor, id.storageKey])
            }
            for table in ["tags", "aliases", "grants", "key_last_usage", "custom_key_store_keys", "backing_keys", "keys"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE key_id = ?", arguments: [id.storageKey])
            }
        }
        // Move the overwritten pages out of the write-ahead log too, so no copy of the EKTs stays behind.
        _ = try? await database.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
    }

    // MARK: Backing keys

    public func backingKey(_ keyID: KeyID, version: UInt32) async throws -> BackingKeyRecord? {
        try await cached(\.backingKeys, ReadCache.BackingKeyID(keyID: keyID, version: version)) { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM backing_keys WHERE key_id = ? AND version = ?",
                arguments: [keyID.storageKey, Int64(version)]
            ).map(Self.backingKeyRecord)
        }
    }

    public func backingKeys(of keyID: KeyID) async throws -> [BackingKeyRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM backing_keys WHERE key_id = ? ORDER BY version", arguments: [keyID.storageKey])
                .map(Self.backingKeyRecord)
        }
    }

    public func legacyBoundBackingKeys() async throws -> [BackingKeyRecord] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT backing_keys.* FROM legacy_bindings JOIN backing_keys
                    ON backing_keys.key_id = legacy_bindings.key_id AND backing_keys.version = legacy_bindings.version
                    """
            ).map(Self.backingKeyRecord)
        }
    }

    public func finishCarryingOver(_ keyID: KeyID, version: UInt32, binding: [UInt8]?) async throws {
        try await write { db in
            if let binding {
                try db.execute(
                    sql: "UPDATE backing_keys SET binding = ? WHERE key_id = ? AND version = ?",
                    arguments: [Data(binding), keyID.storageKey, Int64(version)])
            }
            try db.execute(sql: "DELETE FROM legacy_bindings WHERE key_id = ? AND version = ?", arguments: [keyID.storageKey, Int64(version)])
        }
    }

    public func addBackingKey(_ backingKey: BackingKeyRecord, with change: KeyChange?, if condition: KeyCondition) async throws {
        try await write { db in
            try Self.insert(backingKey, into: db)
            try db.execute(
                sql: "UPDATE keys SET current_version = MAX(current_version, ?) WHERE key_id = ? OR material_owner = ?",
                arguments: [Int64(backingKey.version), backingKey.keyID.storageKey, backingKey.keyID.storageKey])
            if let change {
                // The change is the rotating key's: the owner or, for related multi-Region keys, the one the condition holds for.
                let related = try String.fetchAll(
                    db, sql: "SELECT key_id FROM keys WHERE material_owner = ? AND key_id != ?",
                    arguments: [backingKey.keyID.storageKey, backingKey.keyID.storageKey]
                ).compactMap(KeyID.init(storageKey:))
                for id in [backingKey.keyID] + related {
                    _ = try Self.updateKey(id, set: Self.assignments(change), if: condition, in: db)
                }
            }
        }
    }

    /// Group-committed: reservations that arrive while one transaction is being synced go together in the next,
    /// so the first use of many keys after a start (each reserves a block) costs one sync per batch, not per key.
    /// Each call still returns only once its own reservation is durable.
    public func reserveNonces(_ keyID: KeyID, version: UInt32, upTo reserved: UInt64) async throws {
        try await reservations.submit(NonceReservation(keyID: keyID, version: version, reserved: reserved)) { batch in
            let apply: @Sendable (Database) throws -> Void = { db in
                for item in batch {
                    try db.execute(
                        sql: "UPDATE backing_keys SET nonces_reserved = MAX(nonces_reserved, ?) WHERE key_id = ? AND version = ?",
                        arguments: [Int64(clamping: item.reserved), item.keyID.storageKey, Int64(item.version)])
                }
            }
            // Only the reserved counts of these backing keys change: forget just those rows.
            try await self.writeOnWatch(invalidating: batch.map { ReadCache.BackingKeyID(keyID: $0.keyID, version: $0.version) }, apply)
        }
    }

    // MARK: Aliases

    public func alias(named name: String, account: String, region: String) async throws -> AliasRecord? {
        try await cached(\.aliasesByName, ReadCache.AliasName(account: account, region: region, name: name)) { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM aliases WHERE account_id = ? AND region = ? AND name = ?", arguments: [account, region, name]
            ).map(Self.aliasRecord)
        }
    }

    public func insertAlias(_ alias: AliasRecord) async throws {
        try await insertUnique { db in
            try db.execute(
                sql: "INSERT INTO aliases (account_id, region, name, key_id, creation_date, last_updated_date) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [
                    alias.accountID, alias.region, alias.name, alias.targetKeyID.storageKey, alias.creationDate.timeIntervalSince1970,
                    alias.lastUpdatedDate.timeIntervalSince1970,
                ])
        }
    }

    public func updateAlias(_ alias: AliasRecord) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE aliases SET key_id = ?, last_updated_date = ? WHERE account_id = ? AND region = ? AND name = ?",
                arguments: [alias.targetKeyID.storageKey, alias.lastUpdatedDate.timeIntervalSince1970, alias.accountID, alias.region, alias.name])
        }
    }

    public func deleteAlias(named name: String, account: String, region: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM aliases WHERE account_id = ? AND region = ? AND name = ?", arguments: [account, region, name])
        }
    }

    public func listAliases(account: String, region: String, for keyID: KeyID?, after marker: String?, limit: Int) async throws -> Page<AliasRecord> {
        let start = try marker.map { text throws(MetadataStoreError) in try Self.decodeMarker(text, as: String.self) } ?? ""
        return try await read { db in
            let rows: [Row]
            if let keyID {
                rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM aliases WHERE account_id = ? AND region = ? AND key_id = ? AND name > ? ORDER BY name LIMIT ?",
                    arguments: [account, region, keyID.storageKey, start, limit + 1])
            } else {
                rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM aliases WHERE account_id = ? AND region = ? AND name > ? ORDER BY name LIMIT ?",
                    arguments: [account, region, start, limit + 1])
            }
            let page = try rows.prefix(limit).map(Self.aliasRecord)
            let next = rows.count > limit ? page.last.map { Self.encodeMarker($0.name) } : nil
            return Page(items: page, nextMarker: next)
        }
    }

    public func aliases(of keyID: KeyID) async throws -> [AliasRecord] {
        try await cached(\.aliasesOfKey, keyID) { db in
            try Row.fetchAll(db, sql: "SELECT * FROM aliases WHERE key_id = ? ORDER BY name", arguments: [keyID.storageKey]).map(Self.aliasRecord)
        }
    }

    // MARK: Tags

    public func tags(of keyID: KeyID) async throws -> [Tag] {
        try await cached(\.tags, keyID) { db in
            try Row.fetchAll(
                db, sql: "SELECT tag_key, tag_value FROM tags WHERE key_id = ? ORDER BY tag_key", arguments: [keyID.storageKey]
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
                try db.execute(sql: "DELETE FROM tags WHERE key_id = ? AND tag_key = ?", arguments: [keyID.storageKey, tagKey])
            }
        }
    }

    // MARK: Last usage

    public func recordLastUsage(_ usage: [KeyID: KeyLastUsage]) async throws {
        // Only `key_last_usage` changes, which the read cache does not hold: written on the watch connection, this
        // periodic batch (up to one row per key in use) leaves the cache as it is.
        try await writeOnWatch(invalidating: []) { db in
            for (keyID, entry) in usage {
                // A key destroyed meanwhile has no row to update: skip it rather than fail the batch.
                guard try Bool.fetchOne(db, sql: "SELECT 1 FROM keys WHERE key_id = ?", arguments: [keyID.storageKey]) != nil else { continue }
                try db.execute(
                    sql: """
                        INSERT INTO key_last_usage (key_id, operation, timestamp, request_id, event_id) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT (key_id) DO UPDATE SET operation = excluded.operation, timestamp = excluded.timestamp,
                        request_id = excluded.request_id, event_id = excluded.event_id WHERE excluded.timestamp >= key_last_usage.timestamp
                        """,
                    arguments: [keyID.storageKey, entry.operation, entry.timestamp.timeIntervalSince1970, entry.requestID, entry.eventID])
            }
        }
    }

    public func lastUsage(of keyID: KeyID) async throws -> KeyLastUsage? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM key_last_usage WHERE key_id = ?", arguments: [keyID.storageKey]).map {
                KeyLastUsage(
                    operation: $0["operation"], timestamp: Date(timeIntervalSince1970: $0["timestamp"]), requestID: $0["request_id"],
                    eventID: $0["event_id"])
            }
        }
    }

    // MARK: Grants

    public func insertGrant(_ grant: GrantRecord) async throws {
        let operations = try Self.json(grant.operations.map(\.rawValue))
        let constraints = try grant.constraints.map(Self.json)
        try await insertUnique { db in
            try db.execute(
                sql: """
                    INSERT INTO grants (grant_id, key_id, name, grantee, retiring, operations, constraints, issuing_account, creation_date)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    grant.id, grant.keyID.storageKey, grant.name, grant.granteePrincipal, grant.retiringPrincipal, operations,
                    constraints, grant.issuingAccount, grant.creationDate.timeIntervalSince1970,
                ])
        }
    }

    public func grant(_ id: String) async throws -> GrantRecord? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM grants WHERE grant_id = ?", arguments: [id]).map(Self.grantRecord) }
    }

    public func grants(of keyID: KeyID) async throws -> [GrantRecord] {
        try await cached(\.grants, keyID) { db in
            try Row.fetchAll(db, sql: "SELECT * FROM grants WHERE key_id = ? ORDER BY seq", arguments: [keyID.storageKey]).map(Self.grantRecord)
        }
    }

    public func grants(retirableBy principal: String, keyAccount: String?) async throws -> [GrantRecord] {
        try await read { db in
            guard let keyAccount else {
                return try Row.fetchAll(db, sql: "SELECT * FROM grants WHERE retiring = ? ORDER BY seq", arguments: [principal]).map(Self.grantRecord)
            }
            return try Row.fetchAll(
                db,
                sql: """
                    SELECT grants.* FROM grants JOIN keys ON keys.key_id = grants.key_id
                    WHERE grants.retiring = ? AND keys.account_id = ? ORDER BY grants.seq
                    """,
                arguments: [principal, keyAccount]
            ).map(Self.grantRecord)
        }
    }

    public func deleteGrant(_ id: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM grants WHERE grant_id = ?", arguments: [id]) }
    }

    // MARK: Identities

    public func insertAccount(_ account: Account) async throws {
        try await insertUnique { db in
            try db.execute(
                sql: "INSERT INTO accounts (account_id, name, creation_date) VALUES (?, ?, ?)",
                arguments: [account.id, account.name, account.creationDate.timeIntervalSince1970])
        }
    }

    public func account(_ id: String) async throws -> Account? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM accounts WHERE account_id = ?", arguments: [id]).map(Self.accountRecord) }
    }

    public func accounts() async throws -> [Account] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM accounts ORDER BY account_id").map(Self.accountRecord) }
    }

    public func insertPrincipal(_ principal: Principal) async throws {
        let tags = try Self.json(Dictionary(principal.tags.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last }))
        try await insertUnique { db in
            try db.execute(
                sql: "INSERT INTO principals (arn, kind, account_id, name, tags, creation_date) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [principal.arn, principal.kind.rawValue, principal.accountID, principal.name, tags, principal.creationDate.timeIntervalSince1970])
        }
    }

    public func principal(_ arn: String) async throws -> Principal? {
        try await cached(\.principals, arn) { db in try Row.fetchOne(db, sql: "SELECT * FROM principals WHERE arn = ?", arguments: [arn]).map(Self.principalRecord) }
    }

    public func principals() async throws -> [Principal] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM principals ORDER BY arn").map(Self.principalRecord) }
    }

    public func deletePrincipal(_ arn: String) async throws {
        try await write { db in
            for table in ["access_keys", "identity_policies"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE principal_arn = ?", arguments: [arn])
            }
            try db.execute(sql: "DELETE FROM principals WHERE arn = ?", arguments: [arn])
        }
    }

    public func insertAccessKey(_ key: AccessKeyRecord) async throws {
        try await insertUnique { db in
            try db.execute(
                sql: "INSERT INTO access_keys (access_key_id, principal_arn, sealed_secret, status, creation_date) VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    key.accessKeyID, key.principalARN, Data(key.sealedSecret.iv + key.sealedSecret.ciphertextAndTag), key.status.rawValue,
                    key.creationDate.timeIntervalSince1970,
                ])
        }
    }

    public func accessKey(_ accessKeyID: String) async throws -> AccessKeyRecord? {
        try await cached(\.accessKeys, accessKeyID) { db in
            try Row.fetchOne(db, sql: "SELECT * FROM access_keys WHERE access_key_id = ?", arguments: [accessKeyID]).map(Self.accessKeyRecord)
        }
    }

    public func accessKeys(of principalARN: String) async throws -> [AccessKeyRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM access_keys WHERE principal_arn = ? ORDER BY creation_date", arguments: [principalARN])
                .map(Self.accessKeyRecord)
        }
    }

    public func updateAccessKeyStatus(_ accessKeyID: String, _ status: AccessKeyRecord.Status) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE access_keys SET status = ? WHERE access_key_id = ?", arguments: [status.rawValue, accessKeyID])
        }
    }

    public func deleteAccessKey(_ accessKeyID: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM access_keys WHERE access_key_id = ?", arguments: [accessKeyID]) }
    }

    public func putIdentityPolicy(_ policy: IdentityPolicy) async throws {
        try await write { db in
            try db.execute(
                sql: """
                    INSERT INTO identity_policies (principal_arn, name, document) VALUES (?, ?, ?)
                    ON CONFLICT (principal_arn, name) DO UPDATE SET document = excluded.document
                    """,
                arguments: [policy.principalARN, policy.name, policy.document])
        }
    }

    public func deleteIdentityPolicy(principalARN: String, name: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM identity_policies WHERE principal_arn = ? AND name = ?", arguments: [principalARN, name])
        }
    }

    public func identityPolicies(of principalARN: String) async throws -> [IdentityPolicy] {
        try await cached(\.identityPolicies, principalARN) { db in
            try Row.fetchAll(db, sql: "SELECT * FROM identity_policies WHERE principal_arn = ? ORDER BY name", arguments: [principalARN]).map {
                IdentityPolicy(principalARN: $0["principal_arn"], name: $0["name"], document: $0["document"])
            }
        }
    }

    // MARK: Rows

    static func insert(_ key: KeyRecord, into db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO keys (key_id, account_id, region, creation_date, description, key_spec, key_usage, origin, key_manager,
                state, deletion_date, pending_window_days, policy, current_version, rotation_period_days, next_rotation_date,
                expiration_model, valid_to, material_owner, multi_region_key_type)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                key.id.storageKey, key.accountID, key.region, key.creationDate.timeIntervalSince1970, key.description,
                key.keySpec.rawValue, key.keyUsage.rawValue, key.origin.rawValue, key.keyManager.rawValue,
                key.state.rawValue, key.deletionDate?.timeIntervalSince1970, key.pendingWindowInDays, key.policy,
                Int64(key.currentVersion), key.rotationSchedule?.periodInDays, key.rotationSchedule?.nextRotationDate.timeIntervalSince1970,
                key.expirationModel?.rawValue, key.validTo?.timeIntervalSince1970,
                key.isMultiRegion ? key.materialOwner.storageKey : nil, key.multiRegionKeyType?.rawValue,
            ])
    }

    static func insert(_ backingKey: BackingKeyRecord, into db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO backing_keys (key_id, version, wrapped_key, binding, wrapping_key_label, creation_date, nonces_reserved, rotation_type,
                    public_key, material_id, material_description)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                backingKey.keyID.storageKey, Int64(backingKey.version), Data(backingKey.wrappedKey), Data(backingKey.binding),
                backingKey.wrappingKeyLabel, backingKey.creationDate.timeIntervalSince1970, Int64(clamping: backingKey.noncesReserved),
                backingKey.rotationType?.rawValue, backingKey.publicKey.map { Data($0) }, backingKey.materialID, backingKey.materialDescription,
            ])
    }

    static func put(_ tag: Tag, on keyID: KeyID, into db: Database) throws {
        try db.execute(
            sql: "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?, ?, ?) ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
            arguments: [keyID.storageKey, tag.key, tag.value])
    }

    static func keyRecord(_ row: Row) throws -> KeyRecord {
        guard let id = KeyID(storageKey: row["key_id"] as String),
            let keySpec = KeySpec(rawValue: row["key_spec"]), let keyUsage = KeyUsage(rawValue: row["key_usage"]),
            let origin = KeyOrigin(rawValue: row["origin"]), let keyManager = KeyManager(rawValue: row["key_manager"]),
            let state = KeyState(rawValue: row["state"])
        else {
            throw KMSError(.internalFailure, "The metadata store holds a key row it cannot read.")
        }
        return KeyRecord(
            id: id, accountID: row["account_id"], region: row["region"], creationDate: Date(timeIntervalSince1970: row["creation_date"]),
            description: row["description"], keySpec: keySpec, keyUsage: keyUsage, origin: origin, keyManager: keyManager,
            state: state, deletionDate: (row["deletion_date"] as Double?).map(Date.init(timeIntervalSince1970:)),
            pendingWindowInDays: row["pending_window_days"], policy: row["policy"],
            currentVersion: UInt32(row["current_version"] as Int64),
            rotationSchedule: (row["rotation_period_days"] as Int?).flatMap { days in
                (row["next_rotation_date"] as Double?).map { RotationSchedule(periodInDays: days, nextRotationDate: Date(timeIntervalSince1970: $0)) }
            },
            expirationModel: (row["expiration_model"] as String?).flatMap(ExpirationModel.init(rawValue:)),
            validTo: (row["valid_to"] as Double?).map(Date.init(timeIntervalSince1970:)),
            materialOwner: try (row["material_owner"] as String?).map { text throws(KMSError) in
                guard let owner = KeyID(storageKey: text) else {
                    throw KMSError(.internalFailure, "The metadata store holds a key row it cannot read.")
                }
                return owner
            },
            multiRegionKeyType: (row["multi_region_key_type"] as String?).flatMap(MultiRegionKeyType.init(rawValue:)))
    }

    private static func backingKeyRecord(_ row: Row) throws -> BackingKeyRecord {
        guard let id = KeyID(storageKey: row["key_id"] as String), let materialID = row["material_id"] as String? else {
            throw KMSError(.internalFailure, "The metadata store holds a backing-key row it cannot read.")
        }
        return BackingKeyRecord(
            keyID: id, version: UInt32(row["version"] as Int64), wrappedKey: Array(row["wrapped_key"] as Data),
            binding: Array(row["binding"] as Data), wrappingKeyLabel: row["wrapping_key_label"],
            creationDate: Date(timeIntervalSince1970: row["creation_date"]),
            noncesReserved: UInt64(max(0, row["nonces_reserved"] as Int64)),
            rotationType: (row["rotation_type"] as String?).flatMap(RotationType.init(rawValue:)),
            publicKey: (row["public_key"] as Data?).map { Array($0) }, materialID: materialID,
            materialDescription: row["material_description"],
            expirationModel: (row["expiration_model"] as String?).flatMap(ExpirationModel.init(rawValue:)),
            validTo: (row["valid_to"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }

    private static func aliasRecord(_ row: Row) throws -> AliasRecord {
        guard let id = KeyID(storageKey: row["key_id"] as String) else {
            throw KMSError(.internalFailure, "The metadata store holds an alias row it cannot read.")
        }
        return AliasRecord(
            name: row["name"], accountID: row["account_id"], region: row["region"], targetKeyID: id, creationDate: Date(timeIntervalSince1970: row["creation_date"]),
            lastUpdatedDate: Date(timeIntervalSince1970: row["last_updated_date"]))
    }

    private static func grantRecord(_ row: Row) throws -> GrantRecord {
        guard let keyID = KeyID(storageKey: row["key_id"] as String),
            let operations = try? JSONDecoder().decode([String].self, from: Data((row["operations"] as String).utf8))
        else {
            throw KMSError(.internalFailure, "The metadata store holds a grant row it cannot read.")
        }
        let constraints = try (row["constraints"] as String?).map { try JSONDecoder().decode(GrantConstraints.self, from: Data($0.utf8)) }
        return GrantRecord(
            id: row["grant_id"], keyID: keyID, name: row["name"], granteePrincipal: row["grantee"], retiringPrincipal: row["retiring"],
            operations: operations.compactMap(GrantOperation.init(rawValue:)), constraints: constraints,
            issuingAccount: row["issuing_account"], creationDate: Date(timeIntervalSince1970: row["creation_date"]))
    }

    private static func accountRecord(_ row: Row) -> Account {
        Account(id: row["account_id"], name: row["name"], creationDate: Date(timeIntervalSince1970: row["creation_date"]))
    }

    private static func principalRecord(_ row: Row) throws -> Principal {
        guard let kind = Principal.Kind(rawValue: row["kind"]),
            let tags = try? JSONDecoder().decode([String: String].self, from: Data((row["tags"] as String).utf8))
        else {
            throw KMSError(.internalFailure, "The metadata store holds a principal row it cannot read.")
        }
        return Principal(
            arn: row["arn"], kind: kind, accountID: row["account_id"], name: row["name"],
            tags: tags.map { Tag(key: $0.key, value: $0.value) }.sorted { $0.key < $1.key },
            creationDate: Date(timeIntervalSince1970: row["creation_date"]))
    }

    private static func accessKeyRecord(_ row: Row) throws -> AccessKeyRecord {
        let sealed = Array(row["sealed_secret"] as Data)
        guard sealed.count > 12, let status = AccessKeyRecord.Status(rawValue: row["status"]) else {
            throw KMSError(.internalFailure, "The metadata store holds an access-key row it cannot read.")
        }
        return AccessKeyRecord(
            accessKeyID: row["access_key_id"], principalARN: row["principal_arn"],
            sealedSecret: SealedData(iv: Array(sealed.prefix(12)), ciphertextAndTag: Array(sealed.dropFirst(12))), status: status,
            creationDate: Date(timeIntervalSince1970: row["creation_date"]))
    }

    private static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    // MARK: Markers and errors

    private static func encodeMarker(_ value: String) -> String { Data(value.utf8).base64EncodedString() }

    private static func decodeMarker<T: LosslessStringConvertible>(_ marker: String, as type: T.Type) throws(MetadataStoreError) -> T {
        guard let data = Data(base64Encoded: marker), let text = String(data: data, encoding: .utf8), let value = T(text) else {
            throw MetadataStoreError.invalidMarker
        }
        return value
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let start = ContinuousClock.now
        defer { StoreMetrics.read.record(duration: ContinuousClock.now - start) }
        do {
            return try await database.read(body)
        } catch let error as KMSError {
            throw error
        } catch {
            throw KMSError(.internalFailure, "The metadata store could not be read.", cause: error)
        }
    }

    /// A write on the watch connection: its own commits do not change its `data_version`, so the cache is not
    /// emptied; only the backing-key rows named are forgotten. For writes that change nothing else the cache holds.
    private func writeOnWatch(invalidating ids: [ReadCache.BackingKeyID], _ body: @escaping @Sendable (Database) throws -> Void) async throws {
        guard let watch else { return try await write(body) }
        defer { cache.invalidate(backingKeys: ids) }
        let start = ContinuousClock.now
        defer { StoreMetrics.watchWrite.record(duration: ContinuousClock.now - start) }
        do {
            try await watch.write(body)
        } catch {
            throw KMSError(.internalFailure, "The metadata store could not be written.", cause: error)
        }
    }

    /// A write whose unique-constraint violation means "that name or id is taken".
    func insertUnique(_ body: @escaping @Sendable (Database) throws -> Void) async throws {
        do {
            try await write(body)
        } catch let error as KMSError {
            if let cause = error.cause as? DatabaseError, cause.resultCode == .SQLITE_CONSTRAINT {
                throw MetadataStoreError.duplicate
            }
            throw error
        }
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        // Whatever this write changes, no cached row survives it (the data_version check would catch it too).
        defer { cache.invalidate() }
        let start = ContinuousClock.now
        defer { StoreMetrics.write.record(duration: ContinuousClock.now - start) }
        do {
            return try await database.write(body)
        } catch let error as KMSError {
            throw error
        } catch {
            throw KMSError(.internalFailure, "The metadata store could not be written.", cause: error)
        }
    }
}

/// The `SET` part of a key update: `column = ?` assignments and their values, in order.
private struct KeyAssignments {
    var sql: String
    var arguments: StatementArguments
    init(_ sql: String, _ arguments: StatementArguments) {
        self.sql = sql
        self.arguments = arguments
    }
}

/// `trent_store_duration_seconds{operation}`: the time of each SQLite read and committed write (write: the pool's
/// writer; watch_write: nonce reservations and readiness heartbeats on the watch connection), failed ones included.
enum StoreMetrics {
    static let read = Metrics.Timer(label: "trent_store_duration_seconds", dimensions: [("operation", "read")])
    static let write = Metrics.Timer(label: "trent_store_duration_seconds", dimensions: [("operation", "write")])
    static let watchWrite = Metrics.Timer(label: "trent_store_duration_seconds", dimensions: [("operation", "watch_write")])
}
