import ArgumentParser
import Foundation
import KMS
import KMSSQLite

/// `trent identity ...`: accounts, users, roles, integrated services, access keys and identity policies, kept
/// in the metadata store (secrets sealed in the token). Output is JSON, for scripts.
struct IdentityCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity",
        abstract: "Manage accounts, principals, access keys and identity policies.",
        subcommands: [
            CreateAccount.self, CreateUser.self, CreateRole.self, CreateService.self, DeletePrincipal.self,
            CreateAccessKey.self, SetAccessKeyStatus.self, DeleteAccessKey.self, PutPolicy.self, DeletePolicy.self, List.self,
        ])

    /// Opens the runtime, runs `body` with the directory, prints its result as JSON, and closes everything.
    static func run<Result: Encodable>(_ options: ConfigOption, _ body: (IdentityDirectory, TrentRuntime) async throws -> Result) async throws {
        try await Trent.runReportingFailures {
            let configuration = try options.load()
            let runtime = try await TrentRuntime.open(configuration, createMissing: configuration.isEmbeddedToken)
            do {
                let result = try await body(runtime.directory, runtime)
                await runtime.shutdown()
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try encoder.encode(result) + Data("\n".utf8))
            } catch {
                await runtime.shutdown()
                throw error
            }
        }
    }

    struct PrincipalOutput: Encodable {
        var Arn: String
        var Kind: String
        var AccountId: String?
        var Tags: [String: String]

        init(_ principal: Principal) {
            Arn = principal.arn
            Kind = principal.kind.rawValue
            AccountId = principal.accountID
            Tags = Dictionary(principal.tags.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        }
    }

    struct Done: Encodable { var Done = true }

    struct CreateAccount: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an account.")
        @OptionGroup var options: ConfigOption
        @Option(help: "The 12-digit account id.") var id: String
        @Option(help: "A name for the account.") var name: String = ""

        func run() async throws {
            try await IdentityCommand.run(options) { directory, _ in
                let account = try await directory.createAccount(id: id, name: name.isEmpty ? id : name)
                return ["AccountId": account.id, "Name": account.name]
            }
        }
    }

    /// The options of a user or role: its account, name and tags.
    struct PrincipalOptions: ParsableArguments {
        @OptionGroup var options: ConfigOption
        @Option(help: "The account id.") var account: String
        @Option(help: "The user or role name.") var name: String
        @Option(name: .customLong("tag"), help: "A principal tag, KEY=VALUE (repeatable).") var tags: [String] = []

        func create(_ kind: Principal.Kind) async throws {
            try await IdentityCommand.run(options) { directory, _ in
                PrincipalOutput(try await directory.createPrincipal(kind: kind, accountID: account, name: name, tags: try parseTags(tags)))
            }
        }
    }

    struct CreateUser: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user of an account.")
        @OptionGroup var principal: PrincipalOptions
        func run() async throws { try await principal.create(.user) }
    }

    struct CreateRole: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a role of an account.")
        @OptionGroup var principal: PrincipalOptions
        func run() async throws { try await principal.create(.role) }
    }

    struct CreateService: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register an integrated service (such as rds.us-east-1.amazonaws.com) that calls on behalf of principals.")
        @OptionGroup var options: ConfigOption
        @Option(help: "The service principal, <service>.<region>.amazonaws.com.") var name: String

        func run() async throws {
            try await IdentityCommand.run(options) { directory, _ in
                PrincipalOutput(try await directory.createPrincipal(kind: .service, accountID: nil, name: name))
            }
        }
    }

    struct DeletePrincipal: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a principal with its access keys and policies.")
        @OptionGroup var options: ConfigOption
        @Option(help: "The principal ARN (or service name).") var principal: String

        func run() async throws {
            try await IdentityCommand.run(options) { directory, _ in
                try await directory.deletePrincipal(principal)
                return Done()
            }
        }
    }

    struct CreateAccessKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an access key (at most two per principal). The secret is printed once and stored only sealed.")
        @OptionGroup var options: ConfigOption
        @Option(help: "The principal ARN (or service name).") var principal: String

        func run() async throws {
            try await IdentityCommand.run(options) { directory, _ in
                let key = try await directory.createAccessKey(for: principal)
                return ["AccessKeyId": key.accessKeyID, "SecretAccessKey": key.secretAccessKey, "Principal": key.principalARN]
            }
        }
    }

    struct SetAccessKeyStatus: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Activate or deactivate an access key.")
        @OptionGroup var options: ConfigOption
        @Option(name: .customLong("access-key-id")) var accessKeyID: String
        @Option(help: "Active or Inactive.") var status: String

        func run() async throws {
            guard let status = AccessKeyRecord.Status(rawValue: status) else {
                throw ValidationError("--status must be Active or Inactive")
            }
            try await IdentityCommand.run(options) { directory, _ in
                try await directory.setAccessKeyStatus(accessKeyID, status)
                return Done()
            }
        }
    }

    struct DeleteAccessKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an access key.")
        @OptionGroup var options: ConfigOption
        @Option(name: .customLong("access-key-id")) var accessKeyID: String

        func run() async throws {
            try await IdentityCommand.run(options) { directory, _ in
                try await directory.deleteAccessKey(accessKeyID)
                return Done()
            }
        }
    }

    struct PutPolicy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Attach (or replace) an identity policy of a user or role.")
        @OptionGroup var options: ConfigOption
        @Option(help: "The user or role ARN.") var principal: String
        @Option(help: "The policy's name.") var name: String
        @Option(help: "The policy document: JSON, or @FILE.") var document: String

        func run() async throws {
            let text: String
            if document.hasPrefix("@") {
                guard let contents = try? String(contentsOfFile: String(document.dropFirst()), encoding: .utf8) else {
                    throw ValidationError("cannot read \(document.dropFirst())")
                }
                text = contents
            } else {
                text = document
            }
            try await IdentityCommand.run(options) { directory, _ in
                try await directory.putIdentityPolicy(principalARN: principal, name: name, document: text)
                return Done()
            }
        }
    }

    struct DeletePolicy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Detach an identity policy.")
        @OptionGroup var options: ConfigOption
        @Option(help: "The user or role ARN.") var principal: String
        @Option(help: "The policy's name.") var name: String

        func run() async throws {
            try await IdentityCommand.run(options) { directory, _ in
                try await directory.deleteIdentityPolicy(principalARN: principal, name: name)
                return Done()
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List accounts, principals, access keys (never secrets) and policy names.")
        @OptionGroup var options: ConfigOption

        struct Listing: Encodable {
            struct Entry: Encodable {
                var Principal: PrincipalOutput
                var AccessKeys: [[String: String]]
                var Policies: [String]
            }
            var Accounts: [[String: String]]
            var Principals: [Entry]
        }

        func run() async throws {
            try await IdentityCommand.run(options) { _, runtime in
                var entries: [Listing.Entry] = []
                for principal in try await runtime.store.principals() {
                    let keys = try await runtime.store.accessKeys(of: principal.arn).map { ["AccessKeyId": $0.accessKeyID, "Status": $0.status.rawValue] }
                    let policies = try await runtime.store.identityPolicies(of: principal.arn).map(\.name)
                    entries.append(Listing.Entry(Principal: PrincipalOutput(principal), AccessKeys: keys, Policies: policies))
                }
                let accounts = try await runtime.store.accounts().map { ["AccountId": $0.id, "Name": $0.name] }
                return Listing(Accounts: accounts, Principals: entries)
            }
        }
    }
}

/// Parses `KEY=VALUE` tags.
func parseTags(_ texts: [String]) throws -> [Tag] {
    try texts.map { text in
        let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("a tag is KEY=VALUE, not '\(text)'") }
        return Tag(key: String(parts[0]), value: String(parts[1]))
    }
}
