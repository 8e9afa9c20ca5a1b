public import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a store file holds, as `trent store backup` and `restore` print it.
public struct StoreSummary: Sendable, Equatable {
    /// KMS keys (in every state, including those pending deletion).
    public var keys: Int
    /// Schema migrations applied, and the last of them: a backup restores on a Trent that knows all of them.
    public var schemaVersion: Int
    public var latestMigration: String
    public var bytes: UInt64
}

/// Why a backup or a restore did not happen, as one line saying what to do.
public struct StoreBackupError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Online backups of the SQLite store and their restore.
///
/// A backup is SQLite's backup API run in one step inside one read transaction, beside a serving Trent (WAL mode lets
/// a reader copy a consistent snapshot while the server keeps writing): every change committed before the copy began
/// is in it, none made after. The copy is written to a temporary file next to the target, switched to a
/// self-contained rollback journal, checked (`PRAGMA integrity_check`), fsynced and renamed into place (0600), and
/// the folder fsynced, so the target is either the old file or the whole new one.
///
/// The backup holds what the store holds: key metadata, backing keys wrapped under the token's domain key, sealed
/// secrets. Nothing in it decrypts without a token that holds the same domain and sealing keys.
public enum SQLiteStoreBackup {
    /// Copies the store at `storePath` to `target`.
    public static func backup(storePath: String, to target: String) throws -> StoreSummary {
        guard FileManager.default.fileExists(atPath: storePath) else {
            throw StoreBackupError("there is no store at \(storePath): check store.sqlitePath / dataDirectory")
        }
        let targetURL = URL(fileURLWithPath: target).standardizedFileURL
        let store = URL(fileURLWithPath: storePath).resolvingSymlinksInPath().path
        let resolvedTarget = targetURL.resolvingSymlinksInPath().path
        guard ![store, store + "-wal", store + "-shm", store + "-journal", store + ".lock"].contains(resolvedTarget) else {
            throw StoreBackupError("\(target) is the store itself: write the backup to another file")
        }
        let temporary = try createTemporaryFile(beside: targetURL)
        do {
            var configuration = Configuration()
            configuration.busyMode = .timeout(10)
            configuration.label = "trent.backup.source"
            let source = try DatabaseQueue(path: storePath, configuration: configuration)
            let copy = try DatabaseQueue(path: temporary.path, configuration: Configuration())
            try source.backup(to: copy)
            try source.close()
            // The copied header says WAL; a backup is one file, so it gets a rollback journal (the server turns WAL
            // back on when it opens a restored store).
            try copy.writeWithoutTransaction { db in _ = try String.fetchOne(db, sql: "PRAGMA journal_mode = DELETE") }
            let summary = try summarize(copy, name: "the copy of \(storePath)")
            try copy.close()
            try synchronizeFile(temporary)
            try replace(targetURL, with: temporary)
            return StoreSummary(
                keys: summary.keys, schemaVersion: summary.schemaVersion, latestMigration: summary.latestMigration,
                bytes: fileSize(targetURL.path))
        } catch {
            removeFileAndJournals(temporary)
            if let error = error as? StoreBackupError { throw error }
            throw StoreBackupError("the backup of \(storePath) failed: \(error)")
        }
    }

    /// Checks that `file` is an intact Trent store this binary can serve, and says what it holds.
    public static func inspect(_ file: String) throws -> StoreSummary {
        guard FileManager.default.fileExists(atPath: file) else { throw StoreBackupError("\(file) does not exist") }
        var configuration = Configuration()
        configuration.readonly = true
        do {
            let database = try DatabaseQueue(path: file, configuration: configuration)
            defer { try? database.close() }
            return try summarize(database, name: file)
        } catch let error as StoreBackupError {
            throw error
        } catch let error as DatabaseError where error.resultCode == .SQLITE_NOTADB {
            throw StoreBackupError("\(file) is not a Trent store (not an SQLite database)")
        } catch {
            throw StoreBackupError("\(file) cannot be read as a Trent store: \(error)")
        }
    }

    /// Replaces the store at `storePath` with the backup `file`, which must pass ``inspect(_:)``. The caller holds the
    /// ``StoreLock``, so no server uses the store. The replaced store (with its write-ahead log, which belongs to it
    /// and must never meet the restored file) is kept beside it as `<store>.replaced-<time>`, and its name returned.
    public static func restore(_ file: String, over storePath: String) throws -> (summary: StoreSummary, replaced: String?) {
        let summary = try inspect(file)
        let storeURL = URL(fileURLWithPath: storePath).standardizedFileURL
        try FileManager.default.createDirectory(
            at: storeURL.deletingLastPathComponent(), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let temporary = try createTemporaryFile(beside: storeURL)
        do {
            try copyBytes(from: file, to: temporary)
            try synchronizeFile(temporary)
        } catch {
            removeFileAndJournals(temporary)
            throw StoreBackupError("cannot copy \(file) next to \(storePath): \(error)")
        }
        var replaced: String?
        let manager = FileManager.default
        let existing = [storeURL.path, storeURL.path + "-wal", storeURL.path + "-journal"].filter { manager.fileExists(atPath: $0) }
        if !existing.isEmpty {
            let stamp = Date().formatted(.iso8601).replacingOccurrences(of: ":", with: "")
            let aside = storeURL.path + ".replaced-" + stamp
            for path in existing {
                let suffix = String(path.dropFirst(storeURL.path.count))
                guard rename(path, aside + suffix) == 0 else {
                    removeFileAndJournals(temporary)
                    throw StoreBackupError("cannot move \(path) aside: \(String(cString: strerror(errno))); nothing was restored")
                }
            }
            replaced = aside
        }
        // The shared-memory index describes the old log; SQLite rebuilds it.
        _ = unlink(storeURL.path + "-shm")
        guard rename(temporary.path, storeURL.path) == 0 else {
            let reason = String(cString: strerror(errno))
            removeFileAndJournals(temporary)
            throw StoreBackupError("cannot move the restored store into place at \(storePath): \(reason)")
        }
        synchronizeDirectory(storeURL.deletingLastPathComponent())
        return (StoreSummary(keys: summary.keys, schemaVersion: summary.schemaVersion, latestMigration: summary.latestMigration,
                             bytes: fileSize(storeURL.path)), replaced)
    }

    // MARK: Helpers

    /// - Parameter name: how errors name the file.
    private static func summarize(_ database: DatabaseQueue, name: String) throws -> StoreSummary {
        try database.read { db in
            let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
            guard integrity == ["ok"] else {
                throw StoreBackupError("\(name) is damaged: PRAGMA integrity_check says \(integrity.prefix(3).joined(separator: "; "))")
            }
            let migrator = SQLiteMetadataStore.migrations
            guard try db.tableExists("grdb_migrations"), try db.tableExists("keys"),
                let first = migrator.migrations.first, try migrator.appliedIdentifiers(db).contains(first)
            else {
                throw StoreBackupError("\(name) is not a Trent store (an SQLite database without Trent's tables)")
            }
            let unknown = try SQLiteMetadataStore.unknownMigrations(db)
            if !unknown.isEmpty {
                throw StoreBackupError(
                    "\(name) has a newer schema than this trent knows (migrations \(unknown.map { "'\($0)'" }.joined(separator: ", "))): "
                        + "restore it with the Trent release that made it, or a later one")
            }
            let applied = try migrator.appliedMigrations(db)
            let keys = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM keys") ?? 0
            return StoreSummary(keys: keys, schemaVersion: applied.count, latestMigration: applied.last ?? "", bytes: 0)
        }
    }

    /// A new, empty 0600 file in the target's folder, so the final rename is atomic (same file system).
    private static func createTemporaryFile(beside target: URL) throws -> URL {
        let folder = target.deletingLastPathComponent()
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw StoreBackupError("the folder \(folder.path) does not exist")
        }
        let temporary = folder.appendingPathComponent(".\(target.lastPathComponent).tmp-\(getpid())")
        removeFileAndJournals(temporary)
        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StoreBackupError("cannot create a file in \(folder.path): \(String(cString: strerror(errno)))")
        }
        _ = close(descriptor)
        return temporary
    }

    /// Renames `temporary` over `target` and fsyncs the folder, so the new name survives a crash.
    private static func replace(_ target: URL, with temporary: URL) throws {
        guard rename(temporary.path, target.path) == 0 else {
            throw StoreBackupError("cannot write \(target.path): \(String(cString: strerror(errno)))")
        }
        synchronizeDirectory(target.deletingLastPathComponent())
    }

    private static func copyBytes(from source: String, to target: URL) throws {
        let input = try FileHandle(forReadingFrom: URL(fileURLWithPath: source))
        defer { try? input.close() }
        let output = try FileHandle(forWritingTo: target)
        defer { try? output.close() }
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            try output.write(contentsOf: chunk)
        }
    }

    private static func synchronizeFile(_ url: URL) throws {
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        try handle.synchronize()
    }

    private static func removeFileAndJournals(_ url: URL) {
        for suffix in ["", "-journal", "-wal", "-shm"] { _ = unlink(url.path + suffix) }
    }

    private static func fileSize(_ path: String) -> UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
    }

    private static func synchronizeDirectory(_ url: URL) {
        let descriptor = open(url.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = fsync(descriptor)
        _ = close(descriptor)
    }
}

/// An exclusive lock on `<store>.lock`, held by `trent serve` for as long as it runs and by `trent store restore`
/// while it replaces the file, so a restore never replaces a store a server has open (and a server never opens one
/// being replaced). It is an flock(2) lock: the kernel drops it when the process ends, even by kill -9, so a crash
/// leaves no stale lock. The admin commands that write beside a server (`trent identity`) do not take it.
public final class StoreLock: Sendable {
    public let path: String
    private let descriptor: Int32

    /// Takes the lock, or returns nil when another process holds it.
    public static func acquire(storePath: String) throws -> StoreLock? {
        let path = storePath + ".lock"
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StoreBackupError("cannot open the store's lock file \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let reason = String(cString: strerror(errno))
            _ = close(descriptor)
            if busy { return nil }
            throw StoreBackupError("cannot lock \(path): \(reason)")
        }
        return StoreLock(path: path, descriptor: descriptor)
    }

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { _ = close(descriptor) }
}
