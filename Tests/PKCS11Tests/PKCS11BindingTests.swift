import Crypto
import Foundation
import NIOPosix
import KMSHSM
import PKCS11
import Testing
import TrentTestSupport

/// The binding, on SoftHSM through PKCS#11: loading, sessions, AES-GCM, wrapping, attributes, and the
/// traps of pkcs11-facts §3 and §9 that the binding must design out.
@Suite struct PKCS11BindingTests {
    let hsm: TestHSM
    init() throws { hsm = try TestHSM.shared() }

    /// An AES-256 session key whose value the test may read, to check the token against swift-crypto.
    func readableKey(_ session: borrowing Session) throws(PKCS11Error) -> ObjectHandle {
        try session.generateKey(.aesKeyGen, template: [
            .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32), Attribute(.token, false),
            Attribute(.sensitive, false), Attribute(.extractable, true), Attribute(.encrypt, true), Attribute(.decrypt, true),
        ])
    }

    @Test func findsTokenByLabelOnly() throws {
        #expect(try hsm.module.slot(forTokenLabel: TestHSM.tokenLabel) == hsm.token.slot)
        #expect(try hsm.module.slot(forTokenLabel: "no-such-token") == nil)
        let info = try hsm.module.tokenInfo(slot: hsm.token.slot)
        #expect(info.label == TestHSM.tokenLabel)
        #expect(info.isInitialized && info.isUserPINInitialized)
    }

    @Test func aMissingModuleIsATypedErrorNamingTheLoader() {
        #expect {
            _ = try PKCS11Module(path: "/nonexistent/libpkcs11.so")
        } throws: { error in
            let error = try #require(error as? PKCS11Error)
            return error.function == .loadModule && error.description.contains("/nonexistent/libpkcs11.so")
        }
    }

    @Test func aTokenThatIsNotThereIsTokenNotPresent() {
        #expect(throws: PKCS11Error(.tokenNotPresent, in: .getSlotList)) {
            _ = try Token(module: hsm.module, label: "no-such-token", pin: PIN("1234"))
        }
    }

    @Test func errorsNameTheFunctionAndTheReturnValue() {
        let error = PKCS11Error(.pinIncorrect, in: .login)
        #expect(error.description == "C_Login returned CKR_PIN_INCORRECT (0xA0)")
        #expect(PKCS11Error(.init(rawValue: 0x8000_0001), in: .encrypt).description == "C_Encrypt returned vendor-defined CKR (0x80000001)")
    }

    @Test func gcmMatchesAnIndependentImplementation() throws {
        let plaintext = Array("thirty-two bytes of data key....".utf8)
        let aad = Array("header and context".utf8)
        let (keyBytes, iv, sealed) = try hsm.token.withSession { session throws(PKCS11Error) in
            let key = try readableKey(session)
            let iv = try session.generateRandom(count: 12)
            let sealed = try session.encrypt(plaintext, key: key, mechanism: .aesGCM(iv: iv, additionalData: aad))
            let value = try session.attribute(.value, of: key).value
            try session.destroyObject(key)
            return (value, iv, sealed)
        }
        let expected = try AES.GCM.seal(plaintext, using: SymmetricKey(data: keyBytes), nonce: AES.GCM.Nonce(data: iv), authenticating: aad)
        #expect(sealed == Array(expected.ciphertext) + Array(expected.tag))
        #expect(sealed.count == plaintext.count + 16)
    }

    @Test func gcmRoundTripsAndRejectsAnyTampering() throws {
        let tagFailures = try hsm.profile.authenticationFailures()
        try hsm.token.withSession { session throws(PKCS11Error) in
            let key = try readableKey(session)
            defer { try? session.destroyObject(key) }
            let iv = try session.generateRandom(count: 12)
            let sealed = try session.encrypt([1, 2, 3], key: key, mechanism: .aesGCM(iv: iv, additionalData: [9]))
            #expect(try session.decrypt(sealed, key: key, mechanism: .aesGCM(iv: iv, additionalData: [9])) == [1, 2, 3])
            var flipped = sealed
            flipped[0] ^= 1
            for (data, aad) in [(flipped, [UInt8(9)]), (sealed, [8]), (Array(sealed.dropLast()), [9])] {
                // Each token has its own code for a failed tag check (SoftHSM: CKR_GENERAL_ERROR); the profile lists them.
                #expect {
                    _ = try session.decrypt(data, key: key, mechanism: .aesGCM(iv: iv, additionalData: aad))
                } throws: { error in
                    let error = error as? PKCS11Error
                    return error?.function == .decrypt && tagFailures.contains(error!.returnValue)
                }
            }
            // A failed decrypt ends the operation: the same session works again at once.
            #expect(try session.decrypt(sealed, key: key, mechanism: .aesGCM(iv: iv, additionalData: [9])) == [1, 2, 3])
        }
    }

    /// SoftHSM accepts an empty IV (the same keystream every time) and a 0-bit tag (no authentication);
    /// the binding refuses both before the token sees them.
    @Test(arguments: [[UInt8](), [UInt8](repeating: 0, count: 8), [UInt8](repeating: 0, count: 16)])
    func gcmRefusesAnythingButA12ByteIV(iv: [UInt8]) throws {
        try hsm.token.withSession { session throws(PKCS11Error) in
            let key = try readableKey(session)
            defer { try? session.destroyObject(key) }
            #expect(throws: PKCS11Error(.argumentsBad, in: .encryptInit)) {
                _ = try session.encrypt([1], key: key, mechanism: .aesGCM(iv: iv, additionalData: []))
            }
        }
    }

    @Test(arguments: [0, 64, 100, 136])
    func gcmRefusesShortOrOddTags(tagBits: Int) throws {
        try hsm.token.withSession { session throws(PKCS11Error) in
            let key = try readableKey(session)
            defer { try? session.destroyObject(key) }
            #expect(throws: PKCS11Error(.argumentsBad, in: .encryptInit)) {
                _ = try session.encrypt([1], key: key, mechanism: .aesGCM(iv: Array(repeating: 1, count: 12), additionalData: [], tagBits: tagBits))
            }
        }
    }

    /// Output sizes are queried first (which leaves the operation active, §9), so the binding must always
    /// make the second call: many operations back to back on one session never meet CKR_OPERATION_ACTIVE.
    @Test func sizeQueriesNeverLeaveAnOperationActive() throws {
        try hsm.token.withSession { session throws(PKCS11Error) in
            let key = try readableKey(session)
            defer { try? session.destroyObject(key) }
            for length in [1, 16, 31, 4096] {
                let iv = try session.generateRandom(count: 12)
                let sealed = try session.encrypt(Array(repeating: 7, count: length), key: key, mechanism: .aesGCM(iv: iv, additionalData: []))
                let opened = try session.decrypt(sealed, key: key, mechanism: .aesGCM(iv: iv, additionalData: []))
                #expect(opened.count == length)
                _ = try session.findObjects(matching: [.objectClass(.secretKey)], limit: 1)
                _ = try session.findObjects(matching: [.objectClass(.secretKey)], limit: 1)
            }
        }
    }

    /// RFC 3394 and RFC 5649, by the codes the token's profile gives them (they differ between tokens).
    @Test(arguments: ["rfc3394", "rfc5649"])
    func wrapAndUnwrapRoundTripInsideTheToken(standard: String) throws {
        let code = standard == "rfc3394" ? hsm.profile.keyWrap.rfc3394 : try #require(hsm.profile.keyWrap.rfc5649)
        let mechanism = try #require(MechanismType(name: code))
        try hsm.token.withSession { session throws(PKCS11Error) in
            let wrappingKey = try session.generateKey(.aesKeyGen, template: [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32), Attribute(.token, false),
                Attribute(.wrap, true), Attribute(.unwrap, true),
            ])
            let key = try readableKey(session)
            defer { for object in [wrappingKey, key] { try? session.destroyObject(object) } }
            let wrapped = try session.wrapKey(key, with: wrappingKey, mechanism: .keyWrap(mechanism))
            #expect(wrapped.count == 40)
            let unwrapped = try session.unwrapKey(wrapped, with: wrappingKey, mechanism: .keyWrap(mechanism), template: [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.token, false), Attribute(.sensitive, false),
                Attribute(.extractable, true), Attribute(.encrypt, true),
            ])
            defer { try? session.destroyObject(unwrapped) }
            #expect(try session.attribute(.value, of: unwrapped).value == session.attribute(.value, of: key).value)
            var tampered = wrapped
            tampered[5] ^= 0x80
            #expect(throws: PKCS11Error.self) {
                _ = try session.unwrapKey(tampered, with: wrappingKey, mechanism: .keyWrap(mechanism), template: [
                    .objectClass(.secretKey), .keyType(.aes), Attribute(.token, false),
                ])
            }
        }
    }

    @Test func sensitiveValuesCannotBeRead() throws {
        try hsm.token.withSession { session throws(PKCS11Error) in
            let key = try session.generateKey(.aesKeyGen, template: [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32), Attribute(.token, false),
                Attribute(.sensitive, true), Attribute(.extractable, false),
            ])
            defer { try? session.destroyObject(key) }
            #expect(throws: PKCS11Error(.attributeSensitive, in: .getAttributeValue)) {
                _ = try session.attribute(.value, of: key)
            }
            #expect(try session.attribute(.sensitive, of: key).boolValue == true)
            #expect(try session.attribute(.keyType, of: key).ulongValue == KeyType.aes.rawValue)
        }
    }

    @Test func aDestroyedObjectIsGone() throws {
        try hsm.token.withSession { session throws(PKCS11Error) in
            let key = try readableKey(session)
            try session.destroyObject(key)
            // SoftHSM says CKR_OBJECT_HANDLE_INVALID, NSS CKR_KEY_HANDLE_INVALID: both mean the handle is gone.
            #expect {
                _ = try session.encrypt([1], key: key, mechanism: .aesGCM(iv: Array(repeating: 0, count: 12), additionalData: []))
            } throws: { error in
                [.objectHandleInvalid, .keyHandleInvalid].contains((error as? PKCS11Error)?.returnValue)
            }
        }
    }

    @Test func randomBytesComeFromTheToken() throws {
        let (a, b) = try hsm.token.withSession { session throws(PKCS11Error) in
            (try session.generateRandom(count: 32), try session.generateRandom(count: 32))
        }
        #expect(a.count == 32 && b.count == 32 && a != b)
    }

    /// One session per concurrent operation: many threads at once, each with a session of its own
    /// (SoftHSM crashes when two threads share one).
    @Test func concurrentOperationsEachGetTheirOwnSession() async throws {
        let token = hsm.token
        let pool = hsm.hsmToken
        let key = try token.withLongLivedSession { session throws(PKCS11Error) in try readableKey(session) }
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    try await pool.perform("run the test") { _ in
                        var done = 0
                        for _ in 0..<100 {
                            try token.withSession { session throws(PKCS11Error) in
                                let iv = try session.generateRandom(count: 12)
                                let sealed = try session.encrypt([1, 2, 3, 4], key: key, mechanism: .aesGCM(iv: iv, additionalData: [1]))
                                _ = try session.decrypt(sealed, key: key, mechanism: .aesGCM(iv: iv, additionalData: [1]))
                            }
                            done += 1
                        }
                        return done
                    }
                }
            }
            var total = 0
            for try await done in group { total += done }
            #expect(total == 800)
        }
        try token.withLongLivedSession { session throws(PKCS11Error) in try session.destroyObject(key) }
    }
}
