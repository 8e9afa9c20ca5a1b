import Foundation
@testable import KMSSQLite
import Testing
import TrentTestSupport

/// Every connection that writes commits with `synchronous = FULL`: in WAL mode anything less acknowledges a
/// change before it is fsynced (GRDB's pool sets NORMAL when it turns WAL on; the store sets FULL back).
@Suite struct DurabilityTests {
    @Test func everyWritingConnectionSyncsEachCommit() async throws {
        let path = try TestHSM.shared().makeDatabasePath()
        for cacheCapacity in [0, 1_000] {
            let store = try SQLiteMetadataStore(path: path, cacheCapacity: cacheCapacity)
            let modes = try await store.synchronousModes()
            #expect(modes.writer == 2, "the pool's writer: PRAGMA synchronous = \(modes.writer)")
            #expect(modes.watch == (cacheCapacity > 0 ? 2 : nil), "the watch connection: PRAGMA synchronous = \(String(describing: modes.watch))")
        }
    }
}
