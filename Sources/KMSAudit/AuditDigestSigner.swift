public import KMS
import Crypto

/// Signs and checks the digests of the audit trail.
///
/// `digest` is the message to sign: the canonical bytes of a digest line without its `signature` member.
public protocol AuditDigestSigner: Sendable {
    func sign(_ digest: [UInt8]) async throws -> [UInt8]
    /// `false` (not a throw) for a bad, altered or malformed signature; throws only when the check cannot be made
    /// (the token is unavailable).
    func verify(_ digest: [UInt8], signature: [UInt8]) async throws -> Bool
    /// Seals the trail's chain key so that only the token can open it.
    func sealChainKey(_ key: [UInt8]) async throws -> [UInt8]
    /// The chain key, or nil when `sealed` is not a key this token sealed; throws only when the token is unavailable.
    func unsealChainKey(_ sealed: [UInt8]) async throws -> [UInt8]?
}

/// Signs digests with the token's sealing key through ``KeyProvider/seal(_:additionalData:)``.
///
/// signature = iv (12 bytes) || AES-GCM(sealing key, SHA-256(digest), additional data "trent.audit.digest.v1")
/// (48 bytes: 32 sealed plus the 16-byte tag). The GCM tag makes this a MAC that only the token can make or
/// check: `verify` unseals and compares the result with SHA-256 of the message.
public struct TokenDigestSigner: AuditDigestSigner {
    static let additionalData = Array("trent.audit.digest.v1".utf8)
    static let ivLength = 12
    static let sealedLength = SHA256.byteCount + 16

    private let provider: any KeyProvider

    public init(provider: any KeyProvider) {
        self.provider = provider
    }

    public func sign(_ digest: [UInt8]) async throws -> [UInt8] {
        let sealed = try await provider.seal(Array(SHA256.hash(data: digest)), additionalData: Self.additionalData)
        return sealed.iv + sealed.ciphertextAndTag
    }

    public func verify(_ digest: [UInt8], signature: [UInt8]) async throws -> Bool {
        guard signature.count == Self.ivLength + Self.sealedLength else { return false }
        let sealed = SealedData(iv: Array(signature.prefix(Self.ivLength)), ciphertextAndTag: Array(signature.dropFirst(Self.ivLength)))
        let opened: [UInt8]
        do {
            opened = try await provider.unseal(sealed, additionalData: Self.additionalData)
        } catch let error as KMSError where error.code == .invalidCiphertext {
            return false
        }
        return constantTimeEqual(opened, Array(SHA256.hash(data: digest)))
    }

    static let chainKeyAdditionalData = Array("trent.audit.chain-key.v1".utf8)

    public func sealChainKey(_ key: [UInt8]) async throws -> [UInt8] {
        let sealed = try await provider.seal(key, additionalData: Self.chainKeyAdditionalData)
        return sealed.iv + sealed.ciphertextAndTag
    }

    public func unsealChainKey(_ sealed: [UInt8]) async throws -> [UInt8]? {
        guard sealed.count > Self.ivLength else { return nil }
        let data = SealedData(iv: Array(sealed.prefix(Self.ivLength)), ciphertextAndTag: Array(sealed.dropFirst(Self.ivLength)))
        do {
            return try await provider.unseal(data, additionalData: Self.chainKeyAdditionalData)
        } catch let error as KMSError where error.code == .invalidCiphertext {
            return nil
        }
    }
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
}
