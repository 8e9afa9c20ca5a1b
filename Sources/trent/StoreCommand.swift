import ArgumentParser
import Foundation
import KMSSQLite

/// `trent store backup FILE` and `trent store restore FILE`: an online, consistent copy of the SQLite store, and
/// its restore while no server runs (docs/operations.md, "Backups and restore").
struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Back up and restore the metadata store.", subcommands: [Backup.self, Restore.self])

    /// What both commands print: the file and what it holds.
    struct Output: Encodable {
        var File: String
        var Keys: Int
        var SchemaVersion: Int
        var LatestMigration: String
        var Bytes: UInt64
        var Integrity = "ok"
        var Replaced: String?
        var Next: String?
    }

    static func print(_ output: Output) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        FileHandle.standardOutput.write(try encoder.encode(output) + Data("\n".utf8))
    }

    struct Backup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy the store to FILE while Trent serves (SQLite's backup API), check the copy and print what it holds.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "Where to write the backup (created 0600; replaced atomically if it exists).") var file: String

        func run() async throws {
            try await Trent.runReportingFailures {
                let configuration = try options.load()
                let summary = try SQLiteStoreBackup.backup(storePath: configuration.sqliteFile, to: file)
                try StoreCommand.print(
                    Output(File: file, Keys: summary.keys, SchemaVersion: summary.schemaVersion, LatestMigration: summary.latestMigration,
                           Bytes: summary.bytes))
            }
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace the configured store with the backup FILE. Refused while a server uses the store.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "A backup made by `trent store backup`.") var file: String

        func run() async throws {
            try await Trent.runReportingFailures {
                let configuration = try options.load()
                let store = configuration.sqliteFile
                try SecretFile.makeDirectory(URL(fileURLWithPath: store).deletingLastPathComponent())
                guard let lock = try StoreLock.acquire(storePath: store) else {
                    throw StartupError("a trent server is using the store \(store) (\(store).lock is locked): stop it, then restore")
                }
                let (summary, replaced) = try withExtendedLifetime(lock) { try SQLiteStoreBackup.restore(file, over: store) }
                try StoreCommand.print(
                    Output(
                        File: store, Keys: summary.keys, SchemaVersion: summary.schemaVersion, LatestMigration: summary.latestMigration,
                        Bytes: summary.bytes, Replaced: replaced,
                        Next: "Start trent on the token that holds the domain key '\(configuration.hsm.domainKeyLabel)' and the sealing key "
                            + "'\(configuration.hsm.sealingKeyLabel)' this backup was made with: it holds backing keys only wrapped under them."))
            }
        }
    }
}

extension TrentServer {
    /// Held while `serve` runs, so `trent store restore` cannot replace the store under it.
    static func lockStore(_ configuration: TrentConfiguration) throws -> StoreLock {
        let store = configuration.sqliteFile
        try SecretFile.makeDirectory(URL(fileURLWithPath: store).deletingLastPathComponent())
        guard let lock = try StoreLock.acquire(storePath: store) else {
            throw StartupError("the store \(store) is in use by another trent serve or a trent store restore (\(store).lock is locked)")
        }
        return lock
    }
}
