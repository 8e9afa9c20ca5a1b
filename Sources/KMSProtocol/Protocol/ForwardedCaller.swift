import Crypto
public import Foundation
import KMS

/// The forwarded-caller scheme of integrated services (Trent's own, since AWS's internal one is not public).
extension SigV4Verifier {
    /// Verifies a forwarded-caller signature: the caller's proof that `service` may act on its behalf, made
    /// with the caller's own secret over `TRENT-FORWARD-V1\n<date>\n<region>\n<service>` with the SigV4 signing
    /// key of that day, valid for 15 minutes. A service cannot forge it, and it names the service it is for and the
    /// `region` of the request it comes with.
    public func verifyForwardedCaller(
        accessKeyID: String, date amzDate: String, signature: String, service: String, region: String, now: Date = Date()
    ) async throws -> Credential {
        guard let credential = try await credentials.credential(for: accessKeyID) else {
            throw KMSError(.accessDenied, "The forwarded caller's access key is not valid.")
        }
        // A proof is valid from its date (never a date in the future, which would stretch its lifetime) for 15 minutes.
        guard let date = Self.parseAmzDate(amzDate), date <= now, now.timeIntervalSince(date) < Self.forwardingLifetime else {
            throw KMSError(.accessDenied, "The forwarded caller's authorization has expired or is not yet valid.")
        }
        let key = signingKey(accessKeyID: credential.accessKeyID, secret: credential.secretAccessKey, date: String(amzDate.prefix(8)), region: region, service: self.service)
        let message = Self.forwardingMessage(date: amzDate, region: region, service: service)
        let expected = HMAC<SHA256>.authenticationCode(for: Array(message.utf8), using: key).hexString
        guard Self.constantTimeEqual(expected, signature.lowercased()) else {
            throw KMSError(.accessDenied, "The forwarded caller's signature does not match: \(service) cannot act on its behalf.")
        }
        return credential
    }

    static let forwardingLifetime: TimeInterval = 15 * 60

    public static func forwardingMessage(date: String, region: String, service: String) -> String {
        "TRENT-FORWARD-V1\n\(date)\n\(region)\n\(service)"
    }
}
