import Foundation
import KMS
import Testing

/// The ciphertext format and the canonical encryption context of design §3.
@Suite struct EncodingTests {
    @Test func canonicalContextIsLengthPrefixedAndSorted() throws {
        #expect(try EncryptionContext().canonicalBytes() == [])
        let context = EncryptionContext(["b": "2", "a": "1"])
        #expect(try context.canonicalBytes() == [0, 2, 0, 1, 0x61, 0, 1, 0x31, 0, 1, 0x62, 0, 1, 0x32])
    }

    @Test func concatenationAmbiguityIsImpossible() throws {
        #expect(try EncryptionContext(["ab": "c"]).canonicalBytes() != EncryptionContext(["a": "bc"]).canonicalBytes())
        #expect(try EncryptionContext(["a": "b", "c": "d"]).canonicalBytes() != EncryptionContext(["a": "bc", "": "d"]).canonicalBytes())
    }

    @Test func contextKeysSortByUTF8Bytes() throws {
        // "Z" (0x5A) sorts before "a" (0x61), and "é" (0xC3 0xA9) after both.
        let bytes = try EncryptionContext(["é": "", "a": "", "Z": ""]).canonicalBytes()
        #expect(bytes == [0, 3, 0, 1, 0x5A, 0, 0, 0, 1, 0x61, 0, 0, 0, 2, 0xC3, 0xA9, 0, 0])
    }

    @Test func blobLayoutIsVersionKeyIDVersionIVCiphertextTag() throws {
        let id = KeyID()
        let blob = CiphertextBlob(keyID: id, backingKeyVersion: 0x0102_0304, iv: Array(repeating: 9, count: 12), sealed: Array(repeating: 7, count: 20))
        let bytes = blob.bytes
        #expect(bytes[0] == 1)
        #expect(Array(bytes[1..<17]) == id.bytes)
        #expect(Array(bytes[17..<21]) == [1, 2, 3, 4])
        #expect(bytes.count == 1 + 16 + 4 + 12 + 20)
        #expect(try CiphertextBlob(parsing: bytes, region: "us-east-1") == blob)
        #expect(try CiphertextBlob.additionalData(keyID: id, backingKeyVersion: 0x0102_0304, context: EncryptionContext(["k": "v"]))
            == Array(bytes[0..<21]) + EncryptionContext(["k": "v"]).canonicalBytes())
    }

    /// A multi-Region key's blob is version 2: the 16 bytes are the id its related keys share, and it names the
    /// related key of the Region that reads it.
    @Test func multiRegionBlobsAreVersion2AndNameTheKeyOfTheReadingRegion() throws {
        let east = KeyID(multiRegion: UUID(), region: "us-east-1")
        let blob = CiphertextBlob(keyID: east, backingKeyVersion: 1, iv: Array(repeating: 9, count: 12), sealed: Array(repeating: 7, count: 20))
        #expect(blob.bytes[0] == 2)
        #expect(Array(blob.bytes[1..<17]) == east.bytes)
        let west = try CiphertextBlob(parsing: blob.bytes, region: "us-west-2").keyID
        #expect(west == KeyID(multiRegion: east.uuid, region: "us-west-2"))
        #expect(west.description == east.description && west.storageKey == "\(east.description)/us-west-2")
        #expect(CiphertextBlob.header(keyID: west, backingKeyVersion: 1) == CiphertextBlob.header(keyID: east, backingKeyVersion: 1))
    }

    @Test func multiRegionKeyIDsAreMrkAnd32LowercaseHexDigits() throws {
        let text = "mrk-1234abcd12ab34cd56ef1234567890ab"
        let id = try #require(KeyID(text, region: "eu-central-1"))
        #expect(id.description == text && id.multiRegion == "eu-central-1")
        #expect(KeyID(storageKey: id.storageKey) == id)
        #expect(KeyID(text) == nil)
        for malformed in ["mrk-1234ABCD12ab34cd56ef1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890a", "mrk-1234abcd12ab34cd56ef1234567890abc",
            "mrk-1234abcd-2ab34cd56ef1234567890ab", "mrx-1234abcd12ab34cd56ef1234567890ab"] {
            #expect(KeyID(malformed, region: "eu-central-1") == nil)
        }
    }

    /// A context whose lengths do not fit the encoding's u16 is refused, never trapped on (a Decrypt could name one).
    @Test func contextsBeyondTheEncodingAreRefused() {
        let longKey = String(repeating: "k", count: 65_536)
        #expect { _ = try EncryptionContext([longKey: "v"]).canonicalBytes() } throws: { ($0 as? KMSError)?.code == .validation }
        #expect { _ = try EncryptionContext(["k": longKey]).canonicalBytes() } throws: { ($0 as? KMSError)?.code == .validation }
    }

    @Test(arguments: [[UInt8](), [1], Array(repeating: 1, count: 48), [3] + Array(repeating: 0, count: 60)])
    func malformedBlobsAreInvalidCiphertext(bytes: [UInt8]) {
        #expect { _ = try CiphertextBlob(parsing: bytes, region: "us-east-1") } throws: { ($0 as? KMSError)?.code == .invalidCiphertext }
    }

    @Test func keyIDsPrintAndParseAsAWSDoes() throws {
        let text = "1234abcd-12ab-34cd-56ef-1234567890ab"
        let id = try #require(KeyID(text))
        #expect(id.description == text)
        #expect(KeyID(bytes: id.bytes) == id)
        #expect(KeyID("1234abcd") == nil)
        #expect(KeyID("alias/x") == nil)
    }
}
