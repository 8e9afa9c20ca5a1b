import Foundation
import GRDB
import KMS
import KMSSQLite
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
}
