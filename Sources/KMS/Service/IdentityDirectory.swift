import Foundation

/// Accounts, principals, access keys and identity policies: what `trent identity` manages and what SigV4
/// authentication looks up. Secrets are kept only sealed under the token's sealing key, bound to their access
/// key id and principal, and are returned in plaintext exactly once, when created.
public struct IdentityDirectory: Sendable {
    let store: any MetadataStore
    let provider: any KeyProvider
    let clock: any KMSClock

    public init(store: any MetadataStore, provider: any KeyProvider, clock: any KMSClock = SystemClock()) {
        self.store = store
        self.provider = provider
        self.clock = clock
    }

    /// An access key's secret with whose it is, for verifying a signature.
    public struct Credential: Sendable {
        public var accessKeyID: String
        public var secretAccessKey: String
        public var principal: Principal
    }

    /// A new access key: the only time its secret is shown.
    public struct NewAccessKey: Sendable, Encodable {
        public var accessKeyID: String
        public var secretAccessKey: String
        public var principalARN: String
    }

    /// The identity policy of an administrator: everything KMS offers.
    public static let administratorPolicy = #"{"Version":"2012-10-17","Statement":[{"Sid":"KMSAdministrator","Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#

    // MARK: Accounts and principals

    @discardableResult
    public func createAccount(id: String, name: String) async throws -> Account {
        guard Account.isValidID(id) else { throw KMSError(.validation, "An account id is 12 digits, not '\(id)'.") }
        let account = Account(id: id, name: name, creationDate: clock.now())
        do {
            try await store.insertAccount(account)
        } catch MetadataStoreError.duplicate {
            throw KMSError(.alreadyExists, "Account \(id) already exists.")
        }
        return account
    }

    /// Creates a user or role of an account, or (with `kind: .service` and no account) an integrated service.
    @discardableResult
    public func createPrincipal(kind: Principal.Kind, accountID: String?, name: String, tags: [Tag] = []) async throws -> Principal {
        guard Principal.isValidName(name, kind: kind) else { throw KMSError(.validation, "'\(name)' is not a valid \(kind.rawValue) name.") }
        if kind == .service {
            guard accountID == nil else { throw KMSError(.validation, "An integrated service belongs to no account.") }
        } else {
            guard let accountID, try await store.account(accountID) != nil else {
                throw KMSError(.notFound, "Account \(accountID ?? "(none)") does not exist: create it first.")
            }
        }
        let principal = Principal(
            arn: Principal.arn(kind: kind, accountID: accountID, name: name), kind: kind, accountID: accountID, name: name, tags: tags,
            creationDate: clock.now())
        do {
            try await store.insertPrincipal(principal)
        } catch MetadataStoreError.duplicate {
            throw KMSError(.alreadyExists, "Principal \(principal.arn) already exists.")
        }
        return principal
    }

    public func deletePrincipal(_ arn: String) async throws {
        guard try await store.principal(arn) != nil else { throw KMSError(.notFound, "Principal \(arn) does not exist.") }
        try await store.deletePrincipal(arn)
    }

    // MARK: Access keys

    /// Creates an access key with a random secret. A principal may hold two, so secrets rotate without downtime.
    public func createAccessKey(for principalARN: String) async throws -> NewAccessKey {
        let secret = String(try await provider.generateRandom(count: 30).base64EncodedString().prefix(40))
        let accessKeyID = "AKIA" + (try await provider.generateRandom(count: 16)).map { Self.keyIDAlphabet[Int($0) % Self.keyIDAlphabet.count] }.map(String.init).joined()
        try await importAccessKey(accessKeyID, secret: secret, for: principalARN)
        return NewAccessKey(accessKeyID: accessKeyID, secretAccessKey: secret, principalARN: principalARN)
    }

    private static let keyIDAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

    /// Stores a given access key (from configuration), sealed. Replaces the secret if the key exists.
    public func importAccessKey(_ accessKeyID: String, secret: String, for principalARN: String) async throws {
        guard (16...128).contains(accessKeyID.utf8.count), accessKeyID.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            throw KMSError(.validation, "An access key id is 16 to 128 letters and digits.")
        }
        guard !secret.isEmpty else { throw KMSError(.validation, "A secret access key must not be empty.") }
        guard try await store.principal(principalARN) != nil else { throw KMSError(.notFound, "Principal \(principalARN) does not exist.") }
        let sealed = try await provider.seal(Array(secret.utf8), additionalData: Self.secretBinding(accessKeyID, principalARN))
        if let existing = try await store.accessKey(accessKeyID) {
            guard existing.principalARN == principalARN else {
                throw KMSError(.alreadyExists, "Access key \(accessKeyID) belongs to another principal.")
            }
            try await store.deleteAccessKey(accessKeyID)
        } else {
            guard try await store.accessKeys(of: principalARN).count < AccessKeyRecord.maximumPerPrincipal else {
                throw KMSError(.limitExceeded, "\(principalARN) already has \(AccessKeyRecord.maximumPerPrincipal) access keys: delete one first.")
            }
        }
        try await store.insertAccessKey(
            AccessKeyRecord(accessKeyID: accessKeyID, principalARN: principalARN, sealedSecret: sealed, status: .active, creationDate: clock.now()))
    }

    public func setAccessKeyStatus(_ accessKeyID: String, _ status: AccessKeyRecord.Status) async throws {
        guard try await store.accessKey(accessKeyID) != nil else { throw KMSError(.notFound, "Access key \(accessKeyID) does not exist.") }
        try await store.updateAccessKeyStatus(accessKeyID, status)
    }

    public func deleteAccessKey(_ accessKeyID: String) async throws {
        guard try await store.accessKey(accessKeyID) != nil else { throw KMSError(.notFound, "Access key \(accessKeyID) does not exist.") }
        try await store.deleteAccessKey(accessKeyID)
    }

    /// The active access key's secret and principal, for SigV4; nil for an unknown or inactive key.
    public func credential(for accessKeyID: String, cachedSecret: (SealedData) -> String? = { _ in nil }) async throws -> (Credential, SealedData)? {
        guard let key = try await store.accessKey(accessKeyID), key.status == .active,
            let principal = try await store.principal(key.principalARN)
        else { return nil }
        let secret: String
        if let cached = cachedSecret(key.sealedSecret) {
            secret = cached
        } else {
            let bytes = try await provider.unseal(key.sealedSecret, additionalData: Self.secretBinding(accessKeyID, key.principalARN))
            secret = String(decoding: bytes, as: UTF8.self)
        }
        return (Credential(accessKeyID: accessKeyID, secretAccessKey: secret, principal: principal), key.sealedSecret)
    }

    /// What a sealed secret is bound to: moving it to another access key or principal makes it unreadable.
    static func secretBinding(_ accessKeyID: String, _ principalARN: String) -> [UInt8] {
        Array("trent.access-key-secret.v1\n\(accessKeyID)\n\(principalARN)".utf8)
    }

    // MARK: Identity policies

    public func putIdentityPolicy(principalARN: String, name: String, document: String) async throws {
        guard let principal = try await store.principal(principalARN), principal.kind != .service else {
            throw KMSError(.notFound, "User or role \(principalARN) does not exist.")
        }
        guard (1...128).contains(name.utf8.count) else { throw KMSError(.validation, "A policy name is 1 to 128 characters.") }
        do {
            _ = try PolicyDocument(parsing: document, as: .identity)
        } catch {
            throw KMSError(.malformedPolicyDocument, "The identity policy is not valid: \(error.message)")
        }
        try await store.putIdentityPolicy(IdentityPolicy(principalARN: principalARN, name: name, document: document))
    }

    public func deleteIdentityPolicy(principalARN: String, name: String) async throws {
        try await store.deleteIdentityPolicy(principalARN: principalARN, name: name)
    }

    // MARK: The embedded default

    /// Creates, once, the default account and its administrator, a user whose identity policy allows every KMS
    /// action. With `accessKey`, that key is (re)stored sealed; otherwise a first run generates one and returns
    /// it (the only time its secret is shown).
    public func bootstrapAdministrator(
        accountID: String, principalARN: String, accessKey: (id: String, secret: String)?
    ) async throws -> NewAccessKey? {
        if try await store.account(accountID) == nil {
            try await createAccount(id: accountID, name: "default")
        }
        if try await store.principal(principalARN) == nil {
            let prefix = "arn:aws:iam::\(accountID):user/"
            guard principalARN.hasPrefix(prefix) else {
                throw KMSError(.validation, "The administrator must be a user of account \(accountID), not \(principalARN).")
            }
            try await createPrincipal(kind: .user, accountID: accountID, name: String(principalARN.dropFirst(prefix.count)))
            try await putIdentityPolicy(principalARN: principalARN, name: "KMSAdministrator", document: Self.administratorPolicy)
        }
        if let accessKey {
            if let (existing, _) = try await credential(for: accessKey.id), existing.secretAccessKey == accessKey.secret,
                existing.principal.arn == principalARN
            {
                return nil
            }
            try await importAccessKey(accessKey.id, secret: accessKey.secret, for: principalARN)
            return nil
        }
        guard try await store.accessKeys(of: principalARN).isEmpty else { return nil }
        return try await createAccessKey(for: principalARN)
    }
}

extension [UInt8] {
    func base64EncodedString() -> String { Data(self).base64EncodedString() }
}
