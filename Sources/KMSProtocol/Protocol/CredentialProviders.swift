public import KMS
import Synchronization

/// Looks up the secret and identity behind an access key id.
public protocol CredentialProvider: Sendable {
    func credential(for accessKeyID: String) async throws -> Credential?
}

/// A secret access key and whose it is. The description never shows the secret.
public struct Credential: Sendable, CustomStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    /// Empty for an integrated service, which belongs to no account.
    public var accountID: String
    public var principalARN: String
    public var principalKind: Principal.Kind

    public init(accessKeyID: String, secretAccessKey: String, accountID: String, principalARN: String, principalKind: Principal.Kind = .user) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.accountID = accountID
        self.principalARN = principalARN
        self.principalKind = principalKind
    }

    public var description: String { "Credential(\(accessKeyID), \(principalARN))" }
}

/// Credentials from the identity directory in the metadata store. Unsealed secrets are cached in memory (the
/// HMAC needs them), keyed by the sealed value, so a changed or rotated secret is never served stale; the key's
/// status and principal are read on every request, so deactivation takes effect at once.
public final class DirectoryCredentialProvider: CredentialProvider {
    private let directory: IdentityDirectory
    private let secrets = Mutex<[String: (sealed: SealedData, secret: String)]>([:])

    public init(directory: IdentityDirectory) { self.directory = directory }

    public func credential(for accessKeyID: String) async throws -> Credential? {
        let cached = secrets.withLock { $0[accessKeyID] }
        guard let (found, sealed) = try await directory.credential(for: accessKeyID, cachedSecret: { sealed in
            cached?.sealed == sealed ? cached?.secret : nil
        }) else { return nil }
        secrets.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[accessKeyID] = (sealed, found.secretAccessKey)
        }
        return Credential(
            accessKeyID: accessKeyID, secretAccessKey: found.secretAccessKey, accountID: found.principal.accountID ?? "",
            principalARN: found.principal.arn, principalKind: found.principal.kind)
    }
}

/// A fixed set of credentials (for tests of the verifier).
public struct StaticCredentialProvider: CredentialProvider {
    private let credentials: [String: Credential]
    public init(_ credentials: [Credential]) {
        self.credentials = Dictionary(credentials.map { ($0.accessKeyID, $0) }, uniquingKeysWith: { first, _ in first })
    }
    public func credential(for accessKeyID: String) async throws -> Credential? { credentials[accessKeyID] }
}
