import Crypto
public import Foundation
public import KMS
import Synchronization

/// The parts of an HTTP request that Signature Version 4 covers.
public struct SignedRequest: Sendable {
    public var method: String
    public var path: String
    public var query: String
    /// The `Host` header (HTTP/1.1) or `:authority` (HTTP/2).
    public var host: String?
    /// Header values by lowercase name, in the order received.
    public var headers: [String: [String]]
    public var body: [UInt8]

    public init(method: String, path: String, query: String, host: String?, headers: [String: [String]], body: [UInt8]) {
        self.method = method
        self.path = path
        self.query = query
        self.host = host
        self.headers = headers
        self.body = body
    }
}

/// Verifies AWS Signature Version 4 (`AWS4-HMAC-SHA256`, header form) as AWS does for KMS: the scope
/// must name one of the Regions served and service `kms`, the clock may be off by at most five minutes, and signatures are
/// compared in constant time. Signing keys are cached per secret, day, Region and service.
public final class SigV4Verifier: Sendable {
    /// The Regions served: a scope naming another is refused as AWS refuses an unknown Region.
    public let regions: Set<String>
    public let service: String
    let credentials: any CredentialProvider
    let allowedSkew: TimeInterval = 300
    /// Headers that must be signed whenever a request carries them (lowercase name, and as AWS spells it).
    static let headersThatMustBeSigned = [("x-amz-target", "X-Amz-Target"), ("content-type", "Content-Type")]
    /// Signing keys by access key, day, Region and service, with the secret they were derived from (a changed
    /// secret misses).
    private let signingKeys = Mutex<[String: (secret: String, key: SymmetricKey)]>([:])

    public init(regions: Set<String>, service: String = "kms", credentials: any CredentialProvider) {
        self.regions = regions
        self.service = service
        self.credentials = credentials
    }

    /// Returns the credential whose secret signed `request`, and the headers it signed, or throws the AWS error a
    /// client expects.
    public func verify(_ request: SignedRequest, now: Date = Date()) async throws -> Credential {
        try await verifyReturningSignedHeaders(request, now: now).credential
    }

    /// Also returns the Region of the credential scope: the Region the request acts in.
    public func verifyReturningSignedHeaders(
        _ request: SignedRequest, now: Date = Date()
    ) async throws -> (credential: Credential, signedHeaders: Set<String>, region: String) {
        guard let authorization = request.headers["authorization"]?.first else {
            throw KMSError(.missingAuthenticationToken, "Missing Authentication Token")
        }
        let parsed = try Authorization(parsing: authorization)
        guard let credential = try await credentials.credential(for: parsed.accessKeyID) else {
            throw KMSError(.unrecognizedClient, "The security token included in the request is invalid.")
        }
        guard regions.contains(parsed.region) else {
            throw KMSError(.invalidSignature, "Credential should be scoped to a valid region, not '\(parsed.region)'. ")
        }
        guard parsed.service == service else {
            throw KMSError(.invalidSignature, "Credential should be scoped to correct service: '\(service)'. ")
        }
        guard parsed.signedHeaders.contains("host") else {
            throw KMSError(.incompleteSignature, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
        }
        // The operation and the body's format must be covered too, or a captured request could be replayed as another
        // operation with the same body (DescribeKey's {"KeyId":...} sent again as DisableKey). Every AWS SDK and the
        // CLI sign both.
        for (name, spelled) in Self.headersThatMustBeSigned where request.headers[name] != nil && !parsed.signedHeaders.contains(name) {
            throw KMSError(.incompleteSignature, "'\(spelled)' must be a 'SignedHeader' in the AWS Authorization.")
        }
        guard let amzDate = request.headers["x-amz-date"]?.first, let requestDate = Self.parseAmzDate(amzDate) else {
            throw KMSError(.incompleteSignature, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        }
        // The scope's date is exactly the request's day: a prefix test would let "" or "2026" pass.
        guard parsed.date.utf8.elementsEqual(amzDate.utf8.prefix(8)) else {
            throw KMSError(.invalidSignature, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '\(parsed.date)' != '\(amzDate.prefix(8))'")
        }
        if abs(requestDate.timeIntervalSince(now)) > allowedSkew {
            let earliest = Self.formatAmzDate(now.addingTimeInterval(-allowedSkew))
            let latest = Self.formatAmzDate(now.addingTimeInterval(allowedSkew))
            throw KMSError(.invalidSignature, "Signature expired: \(amzDate) is now earlier than \(earliest) (or later than \(latest)).")
        }

        let canonical = canonicalRequest(request, signedHeaders: parsed.signedHeaders)
        let scope = "\(parsed.date)/\(parsed.region)/\(parsed.service)/aws4_request"
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(SHA256.hash(data: canonical).hexString)"
        let key = signingKey(accessKeyID: credential.accessKeyID, secret: credential.secretAccessKey, date: parsed.date, region: parsed.region, service: parsed.service)
        let expected = HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key).hexString
        guard Self.constantTimeEqual(expected, parsed.signature) else {
            throw KMSError(
                .invalidSignature,
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
        }
        return (credential, Set(parsed.signedHeaders), parsed.region)
    }

    /// The canonical request's bytes, written into one buffer (this runs for every request).
    func canonicalRequest(_ request: SignedRequest, signedHeaders: [String]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        let newline = UInt8(ascii: "\n")
        out += request.method.utf8
        out.append(newline)
        out += Self.canonicalPath(request.path).utf8
        out.append(newline)
        out += Self.canonicalQuery(request.query).utf8
        out.append(newline)
        for name in signedHeaders {
            out += name.utf8
            out.append(UInt8(ascii: ":"))
            let values = name == "host" ? [request.host ?? ""] : (request.headers[name] ?? [])
            for (index, value) in values.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                out += Self.normalizeHeaderValue(value).utf8
            }
            out.append(newline)
        }
        out.append(newline)
        for (index, name) in signedHeaders.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ";")) }
            out += name.utf8
        }
        out.append(newline)
        out += SHA256.hash(data: request.body).hexString.utf8
        return out
    }

    /// The SigV4 signing key of a day, Region and service (the forwarded-caller scheme uses it too).
    func signingKey(accessKeyID: String, secret: String, date: String, region: String, service: String) -> SymmetricKey {
        let cacheKey = "\(accessKeyID)/\(date)/\(region)/\(service)"
        if let cached = signingKeys.withLock({ $0[cacheKey] }), cached.secret == secret { return cached.key }
        var key = SymmetricKey(data: Array("AWS4\(secret)".utf8))
        for part in [date, region, service, "aws4_request"] {
            key = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key))
        }
        signingKeys.withLock { cache in
            if cache.count > 1024 { cache.removeAll() }
            cache[cacheKey] = (secret, key)
        }
        return key
    }

    // MARK: Parsing and canonical forms

    struct Authorization {
        var accessKeyID: String
        var date: String
        var region: String
        var service: String
        var signedHeaders: [String]
        var signature: String

        static let maximumSignedHeaders = 64

        init(parsing header: String) throws(KMSError) {
            let prefix = "AWS4-HMAC-SHA256 "
            guard header.hasPrefix(prefix) else {
                throw KMSError(.incompleteSignature, "Authorization header must use the AWS4-HMAC-SHA256 algorithm.")
            }
            // `name=value` fields separated by commas, each trimmed of spaces and tabs; a field without a name or a
            // value is ignored, and a repeated name keeps its last value. Scanned over the bytes once.
            let bytes = Array(header.utf8)
            var credential: String?
            var signedHeaders: String?
            var signature: String?
            func isBlank(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
            var start = prefix.utf8.count
            while start < bytes.count {
                let end = bytes[start...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.count
                defer { start = end + 1 }
                var (low, high) = (start, end)
                while low < high, isBlank(bytes[low]) { low += 1 }
                while high > low, isBlank(bytes[high - 1]) { high -= 1 }
                guard let equals = bytes[low..<high].firstIndex(of: UInt8(ascii: "=")), equals != low, equals + 1 != high else { continue }
                let name = bytes[low..<equals]
                let value = String(decoding: bytes[(equals + 1)..<high], as: UTF8.self)
                if name.elementsEqual("Credential".utf8) {
                    credential = value
                } else if name.elementsEqual("SignedHeaders".utf8) {
                    signedHeaders = value
                } else if name.elementsEqual("Signature".utf8) {
                    signature = value
                }
            }
            guard let credential, let signedHeaders, let signature else {
                throw KMSError(
                    .incompleteSignature,
                    "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.")
            }
            let scope = credential.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard scope.count == 5, scope[4] == "aws4_request", !scope[0].isEmpty else {
                throw KMSError(.incompleteSignature, "Credential must have the form <access key>/<date>/<region>/<service>/aws4_request.")
            }
            accessKeyID = scope[0]
            date = scope[1]
            region = scope[2]
            service = scope[3]
            let names = signedHeaders.split(separator: ";").map { name in
                name.utf8.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } ? name.lowercased() : String(name)
            }
            // Each name once, and not more than a request can carry: a name repeated thousands of times would make the
            // canonical request thousands of copies of one header.
            guard names.count <= Self.maximumSignedHeaders, Set(names).count == names.count else {
                throw KMSError(.incompleteSignature, "SignedHeaders must name each header once, and at most \(Self.maximumSignedHeaders) of them.")
            }
            self.signedHeaders = names
            self.signature = signature
        }
    }

    /// Parses `yyyyMMdd'T'HHmmss'Z'` (UTC) strictly, without a formatter object per request.
    static func parseAmzDate(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count == 16, bytes[8] == UInt8(ascii: "T"), bytes[15] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int32? {
            var value: Int32 = 0
            for index in range {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int32(byte - UInt8(ascii: "0"))
            }
            return value
        }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8), let hour = number(9..<11),
            let minute = number(11..<13), let second = number(13..<15),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var parts = tm()
        parts.tm_year = year - 1900
        parts.tm_mon = month - 1
        parts.tm_mday = day
        parts.tm_hour = hour
        parts.tm_min = minute
        parts.tm_sec = second
        let seconds = timegm(&parts)
        // timegm normalises out-of-range days (Feb 30 -> Mar 2): refuse those as the formatter did.
        guard parts.tm_mday == day, parts.tm_mon == month - 1 else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(seconds))
    }

    static func formatAmzDate(_ date: Date) -> String { amzDateFormatter().string(from: date) }

    /// ISO 8601 basic format in UTC, as `X-Amz-Date` carries it. (DateFormatter is not Sendable: one per call.)
    private static func amzDateFormatter() -> DateFormatter {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter
    }

    static func normalizeHeaderValue(_ value: String) -> String {
        // Most values need nothing: no space at either end and no run of spaces (checked without allocating).
        var previousWasSpace = true
        var clean = true
        for byte in value.utf8 {
            let space = byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
            if space && previousWasSpace { clean = false; break }
            previousWasSpace = space
        }
        if clean && !previousWasSpace || value.isEmpty { return value }
        return value.trimmingCharacters(in: .whitespaces).split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    /// The path as sent, with each segment URI-encoded once (AWS services other than S3 normalise it).
    static func canonicalPath(_ path: String) -> String {
        guard !path.isEmpty else { return "/" }
        // The usual path ("/") has nothing to decode or encode.
        if path.utf8.allSatisfy({ $0 == UInt8(ascii: "/") || unreserved.contains($0) }) { return path }
        return path.split(separator: "/", omittingEmptySubsequences: false)
            .map { uriEncode(String($0).removingPercentEncoding ?? String($0)) }
            .joined(separator: "/")
    }

    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        var pairs: [(name: String, value: String)] = []
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            let value = parts.count > 1 ? String(parts[1]) : ""
            pairs.append((uriEncode(name.removingPercentEncoding ?? name), uriEncode(value.removingPercentEncoding ?? value)))
        }
        pairs.sort { lhs, rhs in lhs.name == rhs.name ? lhs.value < rhs.value : lhs.name < rhs.name }
        return pairs.map { pair in pair.name + "=" + pair.value }.joined(separator: "&")
    }

    /// Bytes SigV4 leaves unencoded: A-Z, a-z, 0-9, '-', '_', '.', '~'.
    private static let unreserved: Set<UInt8> = Set(Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~".utf8))

    static func uriEncode(_ text: String) -> String {
        var result: [UInt8] = []
        for byte in text.utf8 {
            if unreserved.contains(byte) {
                result.append(byte)
            } else {
                result.append(UInt8(ascii: "%"))
                result.append(upperHexDigits[Int(byte >> 4)])
                result.append(upperHexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: result, as: UTF8.self)
    }

    private static let upperHexDigits = Array("0123456789ABCDEF".utf8)

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in x.indices { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}
