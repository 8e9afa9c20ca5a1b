import Foundation
@testable import KMS
@testable import KMSHSM
@testable import KMSProtocol

/// SigV4 as the KMS endpoint verifies it: the Authorization header, X-Amz-Date, the canonical request, scope and
/// date checks, and the forwarded-caller scheme.
///
/// Input: lines (`\n`): Authorization, X-Amz-Date, method, path, query, host, then `name:value` header lines up
/// to an empty line; the rest is the body. Absent lines are empty.
///
/// Properties: no trap; every refusal is a KMSError; the canonical forms are idempotent; and the same request
/// signed properly (with the parsed SignedHeaders, the scope of this endpoint and an independent HMAC-SHA256)
/// verifies, as does a properly signed forwarded-caller proof.
enum SigV4Target {
    static let target = FuzzTarget(name: "sigv4", maximumLength: 2048, summary: "SigV4: Authorization header, canonical request, scope/date checks, forwarded caller") { bytes in
        run(bytes)
    }

    static let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    static let region = "us-east-1"
    static let service = "kms"
    static let integratedService = "rds.us-east-1.amazonaws.com"
    static let fixedNow = SigV4Verifier.parseAmzDate("20260101T000000Z")!

    /// A verifier per input: its signing-key cache then lives and dies with the input, so the fuzzer's malloc/free
    /// balance holds and LeakSanitizer does not scan the heap after every input.
    static var verifier: SigV4Verifier {
        SigV4Verifier(
        regions: [region], service: service,
        credentials: StaticCredentialProvider([
            Credential(accessKeyID: "AKIDEXAMPLE", secretAccessKey: secret, accountID: "111122223333", principalARN: "arn:aws:iam::111122223333:user/alice"),
            Credential(
                accessKeyID: "AKIDSERVICE", secretAccessKey: secret, accountID: "", principalARN: integratedService, principalKind: .service),
        ]))
    }

    static func run(_ bytes: [UInt8]) {
        let blank = bytes.firstRange(of: [0x0A, 0x0A])
        let head = blank.map { Array(bytes[..<$0.lowerBound]) } ?? bytes
        let body = blank.map { Array(bytes[$0.upperBound...]) } ?? []
        let lines = head.pieces(separator: 0x0A).map { String(decoding: $0, as: UTF8.self) }
        func line(_ index: Int) -> String { index < lines.count ? lines[index] : "" }
        let authorization = line(0), amzDate = line(1)
        var headers: [String: [String]] = ["authorization": [authorization], "x-amz-date": [amzDate]]
        for text in lines.dropFirst(6) {
            guard let colon = text.firstIndex(of: ":") else { continue }
            headers[text[..<colon].lowercased(), default: []].append(String(text[text.index(after: colon)...]))
        }
        let request = SignedRequest(method: line(2), path: line(3), query: line(4), host: line(5), headers: headers, body: body)

        checkCanonicalForms(request)
        let parsedDate = SigV4Verifier.parseAmzDate(amzDate)
        let now = parsedDate ?? fixedNow
        if let parsedDate {
            checkDate(amzDate, parsedDate)
        }

        let outcome = verify(request, now: now)
        if case .failure(let error) = outcome { checkKMSError(error, "SigV4Verifier.verify") }

        var parsed: SigV4Verifier.Authorization?
        do {
            parsed = try SigV4Verifier.Authorization(parsing: authorization)
        } catch {
            check(error.code == .incompleteSignature, "the Authorization header is refused with \(error.code)")
        }
        if let parsed {
            check(!parsed.accessKeyID.isEmpty, "an empty access key id was accepted")
            // Header names are ASCII tokens: what the header names is lowercased there, as the HTTP layer lowercases names.
            check(
                parsed.signedHeaders.allSatisfy { !$0.isEmpty && !$0.utf8.contains { (0x41...0x5A).contains($0) } },
                "signed header names are not lowercase and non-empty: \(parsed.signedHeaders)")
            if parsedDate != nil { checkResigned(request, parsed, amzDate: amzDate) }
        }

        if let key = headers[KMSRequestHandler.forwardedAccessKeyHeader]?.first {
            checkForwarded(
                accessKeyID: key, date: headers[KMSRequestHandler.forwardedDateHeader]?.first ?? amzDate,
                signature: headers[KMSRequestHandler.forwardedSignatureHeader]?.first ?? "")
        }
    }

    static func verify(_ request: SignedRequest, now: Date) -> Result<(credential: Credential, signedHeaders: Set<String>, region: String), any Error> {
        let verifier = self.verifier
        return runBlocking {
            do {
                return .success(try await verifier.verifyReturningSignedHeaders(request, now: now))
            } catch {
                return .failure(error)
            }
        }
    }

    static func checkCanonicalForms(_ request: SignedRequest) {
        let path = SigV4Verifier.canonicalPath(request.path)
        check(SigV4Verifier.canonicalPath(path) == path, "canonicalPath is not idempotent: \(request.path.debugDescription)")
        let query = SigV4Verifier.canonicalQuery(request.query)
        check(SigV4Verifier.canonicalQuery(query) == query, "canonicalQuery is not idempotent: \(request.query.debugDescription)")
        let encoded = SigV4Verifier.uriEncode(request.query)
        check(encoded.utf8.allSatisfy { $0 < 0x80 && $0 != UInt8(ascii: " ") }, "uriEncode left a byte unencoded")
        check(encoded.removingPercentEncoding == request.query, "uriEncode does not decode back")
        for values in request.headers.values {
            for value in values {
                let normal = SigV4Verifier.normalizeHeaderValue(value)
                check(SigV4Verifier.normalizeHeaderValue(normal) == normal, "normalizeHeaderValue is not idempotent: \(value.debugDescription)")
            }
        }
        let canonical = verifier.canonicalRequest(request, signedHeaders: ["host", "x-amz-date", "content-type"])
        check(canonical.count >= 64, "a canonical request without its payload hash")
    }

    /// X-Amz-Date: what parses is a real time, and the same time written back in the format (by gmtime, not the
    /// verifier's DateFormatter, which costs more than everything else here) parses to the same date.
    static func checkDate(_ text: String, _ date: Date) {
        check(date.timeIntervalSince1970.isFinite, "parseAmzDate made a non-finite date")
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let year = Int(parts.tm_year) + 1900
        guard (0...9999).contains(year) else { return }
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let formatted = String(repeating: "0", count: 4 - String(year).count) + String(year)
            + "\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
        check(SigV4Verifier.parseAmzDate(formatted) == date, "\(text) parses to \(date), which writes as \(formatted) and parses back differently")
    }

    /// Signs the fuzzed request properly, keeping its SignedHeaders (plus the ones that must be signed), and
    /// expects the verifier to accept it.
    static func checkResigned(_ request: SignedRequest, _ parsed: SigV4Verifier.Authorization, amzDate: String) {
        var signedHeaders = parsed.signedHeaders
        for name in ["host", "x-amz-target", "content-type"] where !signedHeaders.contains(name) {
            if name == "host" || request.headers[name] != nil { signedHeaders.append(name) }
        }
        // Names that cannot be written back into a header the same way, or that the signature itself changes.
        guard signedHeaders.allSatisfy({ name in
            name != "authorization" && !name.contains(",") && !name.contains(";")
                && name.trimmingCharacters(in: CharacterSet(charactersIn: " \t")) == name
        }) else { return }
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let canonical = verifier.canonicalRequest(request, signedHeaders: signedHeaders)
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(sha256(canonical).hexString)"
        var key = Array("AWS4\(secret)".utf8)
        for part in [day, region, service, "aws4_request"] { key = hmacSHA256(key: key, Array(part.utf8)) }
        let signature = hmacSHA256(key: key, Array(stringToSign.utf8)).hexString

        var signed = request
        signed.headers["authorization"] = [
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\(scope), SignedHeaders=\(signedHeaders.joined(separator: ";")), Signature=\(signature)"
        ]
        let now = SigV4Verifier.parseAmzDate(amzDate)!
        switch verify(signed, now: now) {
        case .success(let result):
            check(result.credential.accessKeyID == "AKIDEXAMPLE", "verified as \(result.credential.accessKeyID)")
            check(result.signedHeaders == Set(signedHeaders), "the verifier reports other signed headers than were signed")
        case .failure(let error):
            check(false, "a properly signed request is refused: \(error); Authorization: \(signed.headers["authorization"]![0].debugDescription)")
        }
    }

    static func checkForwarded(accessKeyID: String, date: String, signature: String) {
        let now = SigV4Verifier.parseAmzDate(date) ?? fixedNow
        let verifier = self.verifier
        let outcome: Result<Credential, any Error> = runBlocking {
            do {
                return .success(
                    try await verifier.verifyForwardedCaller(accessKeyID: accessKeyID, date: date, signature: signature, service: integratedService, region: region, now: now))
            } catch {
                return .failure(error)
            }
        }
        if case .failure(let error) = outcome { checkKMSError(error, "verifyForwardedCaller") }

        // The proof made properly, for the date given, verifies.
        guard SigV4Verifier.parseAmzDate(date) != nil else { return }
        var key = Array("AWS4\(secret)".utf8)
        for part in [String(date.prefix(8)), region, service, "aws4_request"] { key = hmacSHA256(key: key, Array(part.utf8)) }
        let message = SigV4Verifier.forwardingMessage(date: date, region: region, service: integratedService)
        let proof = hmacSHA256(key: key, Array(message.utf8)).hexString
        let valid: Result<Credential, any Error> = runBlocking {
            do {
                return .success(
                    try await verifier.verifyForwardedCaller(accessKeyID: "AKIDEXAMPLE", date: date, signature: proof.uppercased(), service: integratedService, region: region, now: now))
            } catch {
                return .failure(error)
            }
        }
        if case .failure(let error) = valid { check(false, "a proper forwarded-caller proof for \(date.debugDescription) is refused: \(error)") }
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] { AsymmetricEncoding.hash(bytes, .sha256) }

    /// RFC 2104 over SHA-256, written here rather than taken from swift-crypto, so the check is independent of
    /// the verifier's own HMAC.
    static func hmacSHA256(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        var block = key.count > 64 ? sha256(key) : key
        block += [UInt8](repeating: 0, count: 64 - block.count)
        let inner = sha256(block.map { $0 ^ 0x36 } + message)
        return sha256(block.map { $0 ^ 0x5C } + inner)
    }
}
