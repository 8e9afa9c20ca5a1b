import Foundation
import KMS
@testable import KMSProtocol
import Testing

/// SigV4 verification against the AWS Signature Version 4 test suite's `get-vanilla` case, and the AWS
/// errors for each way a signature can be wrong.
@Suite struct SigV4Tests {
    static let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    static let now = SigV4Verifier.parseAmzDate("20150830T123600Z")!

    func verifier(region: String = "us-east-1", service: String = "service") -> SigV4Verifier {
        SigV4Verifier(
            regions: [region], service: service,
            credentials: StaticCredentialProvider([
                Credential(accessKeyID: "AKIDEXAMPLE", secretAccessKey: Self.secret, accountID: "111122223333", principalARN: "arn:aws:iam::111122223333:user/x")
            ]))
    }

    func request(authorization: String?, date: String = "20150830T123600Z") -> SignedRequest {
        var headers = ["x-amz-date": [date]]
        if let authorization { headers["authorization"] = [authorization] }
        return SignedRequest(method: "GET", path: "/", query: "", host: "example.amazonaws.com", headers: headers, body: [])
    }

    static let vanilla = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"

    func code(_ body: () async throws -> Void) async -> String? {
        do { try await body(); return nil } catch let error as KMSError { return error.code.rawValue } catch { return "\(error)" }
    }

    @Test func acceptsTheTestSuiteSignature() async throws {
        let credential = try await verifier().verify(request(authorization: Self.vanilla), now: Self.now)
        #expect(credential.accessKeyID == "AKIDEXAMPLE")
    }

    @Test func refusesEachKindOfBadRequestWithTheAWSError() async {
        let v = verifier()
        #expect(await code { _ = try await v.verify(request(authorization: nil), now: Self.now) } == "MissingAuthenticationTokenException")
        #expect(await code {
            _ = try await v.verify(request(authorization: Self.vanilla.replacingOccurrences(of: "AKIDEXAMPLE", with: "AKIDUNKNOWN")), now: Self.now)
        } == "UnrecognizedClientException")
        #expect(await code {
            _ = try await v.verify(request(authorization: Self.vanilla.replacingOccurrences(of: "Signature=5fa0", with: "Signature=5fa1")), now: Self.now)
        } == "InvalidSignatureException")
        #expect(await code {
            _ = try await v.verify(request(authorization: Self.vanilla), now: Self.now.addingTimeInterval(301))
        } == "InvalidSignatureException")
        #expect(await code { _ = try await verifier(region: "eu-west-1").verify(request(authorization: Self.vanilla), now: Self.now) } == "InvalidSignatureException")
        #expect(await code { _ = try await verifier(service: "kms").verify(request(authorization: Self.vanilla), now: Self.now) } == "InvalidSignatureException")
        #expect(await code { _ = try await v.verify(request(authorization: "Basic dXNlcjpwYXNz"), now: Self.now) } == "IncompleteSignatureException")
    }

    @Test func canonicalFormsFollowTheSpecification() {
        #expect(SigV4Verifier.uriEncode("a b/c~") == "a%20b%2Fc~")
        #expect(SigV4Verifier.canonicalQuery("b=2&a=3&a=1") == "a=1&a=3&b=2")
        #expect(SigV4Verifier.normalizeHeaderValue("  a   b  ") == "a b")
    }
}

@Suite struct AWSJSONTests {
    struct Shape: Decodable {
        var KeyId: String?
        var NumberOfBytes: Int?
        var Plaintext: Blob?
    }

    func code(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let error as KMSError { return error.code.rawValue } catch { return "\(error)" }
    }

    @Test func malformedBodiesAreSerializationErrors() {
        for body in [#"{"KeyId":"#, "[]", #"{"KeyId": 5}"#, #"{"NumberOfBytes": "x"}"#, #"{"NumberOfBytes": 1.5}"#, #"{"Plaintext": "***"}"#] {
            #expect(code { _ = try AWSJSON.decode(Shape.self, from: Array(body.utf8)) } == "SerializationException", "\(body)")
        }
        #expect(code { _ = try AWSJSON.decode(Shape.self, from: []) } == nil)
    }

    @Test func aMissingRequiredMemberIsAValidationErrorNamingIt() throws {
        let shape = try AWSJSON.decode(Shape.self, from: Array("{}".utf8))
        #expect {
            _ = try required(shape.KeyId, "KeyId")
        } throws: { error in
            (error as? KMSError)?.message == "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"
        }
    }
}
