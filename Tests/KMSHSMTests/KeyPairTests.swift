import Crypto
import Foundation
import GRDB
import KMS
@testable import KMSHSM
import KMSSQLite
import Logging
import PKCS11
import Testing
import TrentTestSupport

/// Asymmetric keys keep design §2's promises: the private key is in the store only wrapped, and a wrapped
/// private key, public key and binding cannot be moved to another key.
@Suite struct KeyPairTests {
    let hsm: TestHSM
    let caller = ServiceFixture.caller
    init() throws { hsm = try TestHSM.shared() }

    @Test func thePrivateKeyIsStoredOnlyWrapped() async throws {
        let fixture = try await hsm.makeService()
        let key = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "RSA_2048"), caller: caller)
        let record = try #require(try await fixture.store.backingKey(key.id, version: 1))
        let publicKey = try #require(record.publicKey)
        #expect(try AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: publicKey) != nil)

        // Unwrapped here readable, with the domain key Trent holds, to learn what must not be on disk.
        let domainKey = try #require(try TokenKeys.find(in: hsm.token, label: TestHSM.domainKeyLabel))
        let rfc5649Name = try #require(hsm.profile.keyWrap.rfc5649)
        let rfc5649 = try #require(MechanismType(name: rfc5649Name))
        let privateExponent = try hsm.token.withSession { session throws(PKCS11Error) -> [UInt8] in
            let handle = try session.unwrapKey(record.wrappedKey, with: domainKey, mechanism: .keyWrap(rfc5649), template: [
                .objectClass(.privateKey), .keyType(.rsa), Attribute(.token, false), Attribute(.sensitive, false), Attribute(.extractable, true),
            ])
            defer { try? session.destroyObject(handle) }
            return try session.attribute(.privateExponent, of: handle).value
        }
        #expect(privateExponent.count >= 255)
        // A wrapped private key spills onto overflow pages, so the search is by 16-byte pieces.
        let bytes = fixture.databaseBytes()
        #expect(bytes.containsSequence(Array(record.wrappedKey.prefix(16))), "the search must find what is stored: the EKT")
        for start in stride(from: 0, to: privateExponent.count - 16, by: 16) {
            #expect(!bytes.containsSequence(Array(privateExponent[start..<start + 16])), "private exponent bytes \(start)...")
        }
    }

    @Test func aKeyPairMovedOntoAnotherKeysRowIsRefused() async throws {
        let fixture = try await hsm.makeService()
        let a = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "RSA_2048"), caller: caller)
        let b = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "RSA_2048"), caller: caller)
        let database = try DatabaseQueue(path: fixture.databasePath)
        try await database.write { db in
            try db.execute(sql: """
                UPDATE backing_keys SET wrapped_key = (SELECT wrapped_key FROM backing_keys WHERE key_id = ?),
                binding = (SELECT binding FROM backing_keys WHERE key_id = ?),
                public_key = (SELECT public_key FROM backing_keys WHERE key_id = ?) WHERE key_id = ?
                """, arguments: [a.id.description, a.id.description, a.id.description, b.id.description])
        }
        let restarted = try await hsm.makeService(databasePath: fixture.databasePath)
        await #expect {
            _ = try await restarted.service.sign(
                keyID: b.id.description, message: [1], messageType: nil, algorithm: "RSASSA_PSS_SHA_256", dryRun: nil, caller: caller)
        } throws: { error in
            (error as? KMSError)?.code == .internalFailure
        }
        _ = try await restarted.service.sign(
            keyID: a.id.description, message: [1], messageType: nil, algorithm: "RSASSA_PSS_SHA_256", dryRun: nil, caller: caller)
    }

    /// Raw RSA (`CKM_RSA_X_509`) is allowed on an RSA private key only where the profile says the token's OAEP lacks
    /// a hash Trent needs (SoftHSM: SHA-256); on a token with both hashes the token itself refuses raw RSA with it.
    @Test(
        .enabled(if: KeyPairTests.tokenEnforcesAllowedMechanisms, "only a token that enforces CKA_ALLOWED_MECHANISMS can show it"),
        arguments: [["SHA-1"], ["SHA-1", "SHA-256"]])
    func rawRSAIsAllowedOnlyWhereTheProfileNeedsIt(digests: [String]) async throws {
        var profile = hsm.profile
        profile.rsaOAEPDigests = digests
        let provider = try hsm.makeProvider(profile: profile)
        let fixture = try await hsm.makeService(provider: provider)
        let key = try await fixture.service.createKey(.init(keyUsage: "ENCRYPT_DECRYPT", keySpec: "RSA_2048"), caller: caller)
        let record = try #require(try await fixture.store.backingKey(key.id, version: 1))
        let block = [0x00] + [UInt8](repeating: 0x42, count: 255)
        let raw: Result<[UInt8], PKCS11Error> = try await provider.withWorkingKey(record, kind: .keyPair(.rsa2048), "decrypt raw") {
            session, handle, _ in
            do throws(PKCS11Error) {
                return .success(try session.decrypt(block, key: handle, mechanism: .rsaRaw))
            } catch {
                return .failure(error)
            }
        }
        if profile.needsRawRSA {
            #expect(throws: Never.self) { try raw.get() }
        } else {
            #expect(throws: PKCS11Error.self) { try raw.get() }
        }
        // What the profile claims for SHA-1 holds either way: RSAES_OAEP_SHA_1 round-trips.
        let encrypted = try await fixture.service.encrypt(
            keyID: key.id.description, plaintext: [7, 7, 7], context: .init(), algorithm: "RSAES_OAEP_SHA_1", dryRun: nil, caller: caller)
        let decrypted = try await fixture.service.decrypt(
            ciphertext: encrypted.ciphertextBlob, context: .init(), keyID: key.id.description, algorithm: "RSAES_OAEP_SHA_1", dryRun: nil,
            caller: caller)
        #expect(decrypted.plaintext == [7, 7, 7])
    }

    // MARK: EC keys (on every tested token; NSS softoken with the profile's CKA_NSS_DB unwrap attribute)

    static let nistCurves: [KeyPairSpec] = [.eccNistP256, .eccNistP384, .eccNistP521]

    /// Checks an ECDSA signature (DER) over `message` with the KMS key's public key, outside the token.
    static func verifiesOutside(_ spec: KeyPairSpec, publicKey: [UInt8], signature: [UInt8], message: [UInt8]) throws -> Bool {
        switch spec {
        case .eccNistP256:
            try P256.Signing.PublicKey(derRepresentation: publicKey).isValidSignature(.init(derRepresentation: signature), for: message)
        case .eccNistP384:
            try P384.Signing.PublicKey(derRepresentation: publicKey).isValidSignature(.init(derRepresentation: signature), for: message)
        case .eccNistP521:
            try P521.Signing.PublicKey(derRepresentation: publicKey).isValidSignature(.init(derRepresentation: signature), for: message)
        default:
            false
        }
    }

    /// A peer key outside the token: its SubjectPublicKeyInfo, and the secret it agrees with the KMS key's public key.
    static func peer(_ spec: KeyPairSpec) -> (publicKey: [UInt8], secret: ([UInt8]) throws -> [UInt8]) {
        func bytes(_ secret: SharedSecret) -> [UInt8] { secret.withUnsafeBytes { Array($0) } }
        switch spec {
        case .eccNistP384:
            let key = P384.KeyAgreement.PrivateKey()
            return (Array(key.publicKey.derRepresentation), { try bytes(key.sharedSecretFromKeyAgreement(with: .init(derRepresentation: $0))) })
        case .eccNistP521:
            let key = P521.KeyAgreement.PrivateKey()
            return (Array(key.publicKey.derRepresentation), { try bytes(key.sharedSecretFromKeyAgreement(with: .init(derRepresentation: $0))) })
        default:
            let key = P256.KeyAgreement.PrivateKey()
            return (Array(key.publicKey.derRepresentation), { try bytes(key.sharedSecretFromKeyAgreement(with: .init(derRepresentation: $0))) })
        }
    }

    /// An EC KMS key is generated, wrapped, and unwrapped again on first use (and after a restart) with the profile's
    /// template: it signs what an outside verifier accepts and derives the secret the peer derives.
    @Test(arguments: nistCurves)
    func ecKeysSignAndDeriveAcrossUnwraps(spec: KeyPairSpec) async throws {
        let fixture = try await hsm.makeService()
        let algorithm = spec.signingAlgorithms[0].rawValue
        let signer = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: spec.rawValue), caller: caller)
        let agreer = try await fixture.service.createKey(.init(keyUsage: "KEY_AGREEMENT", keySpec: spec.rawValue), caller: caller)
        let signerPublic = try await fixture.service.getPublicKey(signer.id.description, caller: caller).publicKey
        let agreerPublic = try await fixture.service.getPublicKey(agreer.id.description, caller: caller).publicKey
        let peer = Self.peer(spec)
        let expected = try peer.secret(agreerPublic)
        // The second service is a restart: a new provider, an empty handle cache, so the private keys are unwrapped again.
        for service in [fixture.service, try await hsm.makeService(databasePath: fixture.databasePath).service] {
            let message = Array("EC on \(hsm.profile.name)".utf8)
            let signature = try await service.sign(
                keyID: signer.id.description, message: message, messageType: nil, algorithm: algorithm, dryRun: nil, caller: caller
            ).signature
            #expect(try Self.verifiesOutside(spec, publicKey: signerPublic, signature: signature, message: message))
            _ = try await service.verify(
                keyID: signer.id.description, message: message, messageType: nil, signature: signature, algorithm: algorithm, dryRun: nil,
                caller: caller)
            let secret = try await service.deriveSharedSecret(
                keyID: agreer.id.description, algorithm: "ECDH", publicKey: peer.publicKey, dryRun: nil, caller: caller
            ).sharedSecret
            #expect(secret == expected)
        }
    }

    /// The working copy of an EC private key is a sensitive, non-extractable session object, whatever the token.
    @Test func theUnwrappedECPrivateKeyCannotLeaveTheToken() async throws {
        let fixture = try await hsm.makeService()
        let key = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "ECC_NIST_P256"), caller: caller)
        let record = try #require(try await fixture.store.backingKey(key.id, version: 1))
        let seen = try await fixture.provider.withWorkingKey(record, kind: .keyPair(.eccNistP256), "read attributes") {
            session, handle, _ -> [Bool?] in
            let value: Result<Attribute, PKCS11Error> = Result { () throws(PKCS11Error) in try session.attribute(.value, of: handle) }
            return [
                try session.attribute(.sensitive, of: handle).boolValue, try session.attribute(.extractable, of: handle).boolValue,
                try session.attribute(.token, of: handle).boolValue, value.error?.returnValue == .attributeSensitive,
            ]
        }
        #expect(seen == [true, false, false, true])
    }

    /// The unwrap template carries the profile's extra attribute, from the stored public key, only where the profile
    /// names one; and the token agrees: NSS softoken refuses the unwrap without `CKA_NSS_DB`, SoftHSM refuses
    /// the attribute itself. That is why it is profile data and never sent to every token.
    @Test func theECUnwrapTemplateIsWhatTheProfileSays() async throws {
        let fixture = try await hsm.makeService()
        let key = try await fixture.service.createKey(.init(keyUsage: "SIGN_VERIFY", keySpec: "ECC_NIST_P384"), caller: caller)
        let record = try #require(try await fixture.store.backingKey(key.id, version: 1))
        let spki = try #require(record.publicKey)
        guard case .ec(_, let point) = try AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: spki) else {
            Issue.record("the stored public key is not an EC key")
            return
        }
        let template = try fixture.provider.unwrapTemplate(.keyPair(.eccNistP384), for: record)
        let standard = fixture.provider.backingKeyTemplate(.keyPair(.eccNistP384), extractable: false)
        let named = hsm.profile.privateKeyUnwrap?.ecTemplateAttribute != nil
        #expect(template == standard + (named ? [Attribute(.nssDB, bytes: point)] : []))
        #expect(try fixture.provider.unwrapTemplate(.keyPair(.rsa2048), for: record) == fixture.provider.backingKeyTemplate(.keyPair(.rsa2048), extractable: false))

        let domainKey = try #require(try TokenKeys.find(in: hsm.token, label: TestHSM.domainKeyLabel))
        let rfc5649Name = try #require(hsm.profile.keyWrap.rfc5649)
        let rfc5649 = try #require(MechanismType(name: rfc5649Name))
        func unwrap(_ template: [Attribute]) -> PKCS11Error.ReturnValue {
            let outcome = Result { () throws(PKCS11Error) in
                try hsm.token.withSession { session throws(PKCS11Error) in
                    let handle = try session.unwrapKey(record.wrappedKey, with: domainKey, mechanism: .keyWrap(rfc5649), template: template)
                    try session.destroyObject(handle)
                }
            }
            return outcome.error?.returnValue ?? .ok
        }
        #expect(unwrap(template) == .ok)
        if named {
            #expect(unwrap(standard) == .templateIncomplete, "NSS softoken: no CKA_NSS_DB, no unwrap")
        } else {
            #expect(unwrap(standard + [Attribute(.nssDB, bytes: point)]) == .attributeTypeInvalid, "SoftHSM refuses NSS's vendor attribute")
        }
    }

    /// What a key may do is Trent's decision, from its key usage, not the token's: the working copies' usage
    /// attributes are on (Trent's template asks for them, and NSS softoken turns them on whatever it is asked:
    /// `privateKeyUnwrap.forcedTrue`), and the service refuses the other usage's operations before the token is asked.
    @Test func keyUsageNotTokenAttributesDecidesWhatAKeyDoes() async throws {
        let fixture = try await hsm.makeService()
        let service = fixture.service
        func create(_ usage: String, _ spec: String) async throws -> (id: String, record: BackingKeyRecord) {
            let key = try await service.createKey(.init(keyUsage: usage, keySpec: spec), caller: caller)
            return (key.id.description, try #require(try await fixture.store.backingKey(key.id, version: 1)))
        }
        func tokenSays(_ key: BackingKeyRecord, _ spec: KeyPairSpec, _ type: AttributeType) async throws -> Bool? {
            try await fixture.provider.withWorkingKey(key, kind: .keyPair(spec), "read an attribute") { session, handle, _ in
                try session.attribute(type, of: handle).boolValue
            }
        }
        func isInvalidKeyUsage(_ error: any Error) -> Bool { (error as? KMSError)?.code == .invalidKeyUsage }

        let ecSigner = try await create("SIGN_VERIFY", "ECC_NIST_P256")
        let ecAgreer = try await create("KEY_AGREEMENT", "ECC_NIST_P256")
        let rsaSigner = try await create("SIGN_VERIFY", "RSA_2048")
        let rsaEncrypter = try await create("ENCRYPT_DECRYPT", "RSA_2048")

        #expect(try await tokenSays(ecSigner.record, .eccNistP256, .derive) == true)
        await #expect(performing: {
            _ = try await service.deriveSharedSecret(keyID: ecSigner.id, algorithm: "ECDH", publicKey: Self.peer(.eccNistP256).publicKey, dryRun: nil, caller: caller)
        }, throws: isInvalidKeyUsage)

        #expect(try await tokenSays(ecAgreer.record, .eccNistP256, .sign) == true)
        await #expect(performing: {
            _ = try await service.sign(keyID: ecAgreer.id, message: [1], messageType: nil, algorithm: "ECDSA_SHA_256", dryRun: nil, caller: caller)
        }, throws: isInvalidKeyUsage)

        #expect(try await tokenSays(rsaSigner.record, .rsa2048, .decrypt) == true)
        await #expect(performing: {
            _ = try await service.decrypt(
                ciphertext: [UInt8](repeating: 1, count: 256), context: .init(), keyID: rsaSigner.id, algorithm: "RSAES_OAEP_SHA_256", dryRun: nil,
                caller: caller)
        }, throws: isInvalidKeyUsage)

        #expect(try await tokenSays(rsaEncrypter.record, .rsa2048, .sign) == true)
        await #expect(performing: {
            _ = try await service.sign(keyID: rsaEncrypter.id, message: [1], messageType: nil, algorithm: "RSASSA_PSS_SHA_256", dryRun: nil, caller: caller)
        }, throws: isInvalidKeyUsage)

        // Where the profile says the token forces an attribute on, it is on even when the template asks for it off.
        for (family, spec) in [(HSMProfile.KeyPairFamily.rsa, KeyPairSpec.rsa2048), (.ec, .eccNistP256)] {
            let forced = try hsm.profile.forcedTrueOnUnwrap(family)
            let record = spec.isRSA ? rsaSigner.record : ecSigner.record
            for type in forced {
                #expect(try await tokenSays(record, spec, type) == true, "\(type.name) on \(family.rawValue)")
            }
        }
    }

    /// A curve the profile's `ecCurves` leaves out (NSS softoken: secp256k1) is refused with UnsupportedOperation and
    /// a message naming the profile and the curve, for KMS keys and data key pairs alike; elsewhere it works.
    @Test func secp256k1FollowsTheProfile() async throws {
        let fixture = try await hsm.makeService()
        let request = KeyManagementService.CreateKeyRequest(keyUsage: "SIGN_VERIFY", keySpec: "ECC_SECG_P256K1")
        let symmetric = try await fixture.service.createKey(.init(), caller: caller)
        if hsm.profile.generatesCurve(of: .eccSecgP256k1) {
            let key = try await fixture.service.createKey(request, caller: caller)
            _ = try await fixture.service.sign(
                keyID: key.id.description, message: [1], messageType: nil, algorithm: "ECDSA_SHA_256", dryRun: nil, caller: caller)
            _ = try await fixture.service.generateDataKeyPair(
                keyID: symmetric.id.description, keyPairSpec: "ECC_SECG_P256K1", context: .init(), includePlaintext: true, dryRun: nil, caller: caller)
            return
        }
        let message = "This HSM (profile '\(hsm.profile.name)') has no secp256k1 curve"
        await #expect(performing: { _ = try await fixture.service.createKey(request, caller: caller) }, throws: { error in
            (error as? KMSError)?.code == .unsupportedOperation && (error as? KMSError)?.message.hasPrefix(message) == true
        })
        await #expect(performing: {
            _ = try await fixture.service.generateDataKeyPair(
                keyID: symmetric.id.description, keyPairSpec: "ECC_SECG_P256K1", context: .init(), includePlaintext: false, dryRun: nil, caller: caller)
        }, throws: { error in
            (error as? KMSError)?.code == .unsupportedOperation && (error as? KMSError)?.message.hasPrefix(message) == true
        })
    }

    static var tokenEnforcesAllowedMechanisms: Bool { (try? TestHSM.shared().profile.allowedMechanisms.enforced) ?? false }

    @Test func oaepDecodingUndoesEncodingAndRefusesAnyChange() {
        for digest in [DigestAlgorithm.sha1, .sha256] {
            let message = Array("attack at dawn".utf8)
            let seed = [UInt8](repeating: 0x5A, count: digest.length)
            let encoded = AsymmetricEncoding.oaepEncode(message, modulusLength: 256, seed: seed, digest)
            #expect(encoded.count == 256)
            #expect(AsymmetricEncoding.oaepDecode(encoded, modulusLength: 256, digest) == message)
            for index in [0, 1, 40, 200, 255] {
                var tampered = encoded
                tampered[index] ^= 0x01
                #expect(AsymmetricEncoding.oaepDecode(tampered, modulusLength: 256, digest) == nil, "byte \(index)")
            }
        }
    }

    @Test func derReadingIsStrict() throws {
        let signature = AsymmetricEncoding.derSignature(fromRaw: [0x00, 0x80] + [UInt8](repeating: 1, count: 30) + [UInt8](repeating: 2, count: 32))
        let raw = try AsymmetricEncoding.rawSignature(fromDER: signature, fieldLength: 32)
        #expect(raw.count == 64 && raw[1] == 0x80)
        #expect(throws: DER.Malformed.self) { _ = try AsymmetricEncoding.rawSignature(fromDER: signature + [0], fieldLength: 32) }
        // INTEGER 1 with a needless leading zero, and a long-form length that fits the short form.
        #expect(throws: DER.Malformed.self) { _ = try AsymmetricEncoding.rawSignature(fromDER: [0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01], fieldLength: 32) }
        #expect(throws: DER.Malformed.self) { _ = try AsymmetricEncoding.rawSignature(fromDER: [0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01], fieldLength: 32) }
        // A negative r.
        #expect(throws: DER.Malformed.self) { _ = try AsymmetricEncoding.rawSignature(fromDER: [0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01], fieldLength: 32) }
    }

    @Test func publicKeysRoundTripThroughSubjectPublicKeyInfo() throws {
        let key = P256.Signing.PrivateKey().publicKey
        let parsed = try AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: Array(key.derRepresentation))
        #expect(parsed == .ec(curve: AsymmetricEncoding.p256.parameters, point: Array(key.x963Representation)))
        #expect(AsymmetricEncoding.subjectPublicKeyInfo(parsed) == Array(key.derRepresentation))
    }
}

extension Result {
    fileprivate var error: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
