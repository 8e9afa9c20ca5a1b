import Foundation
import KMS
import KMSHSM
import Logging
import PKCS11
import Testing
import TrentTestSupport

/// Custom key stores through the service, on a second SoftHSM token made in this process (whatever the main
/// test token is): keys generated in it and keys referencing an operator's object, deletion that destroys only
/// Trent's objects, and the nonce budget of material that cannot be renewed.
@Suite struct CustomKeyStoreTests {
    static let softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"
    let hsm: TestHSM
    let caller = ServiceFixture.caller
    init() throws { hsm = try TestHSM.shared() }

    /// A fresh SoftHSM token. On the SoftHSM run it joins the test token's folder; on the NSS run SoftHSM gets
    /// a folder of its own before its module is first loaded.
    func makeSecondToken(label: String, pin: String) throws -> PKCS11Module {
        if ProcessInfo.processInfo.environment["SOFTHSM2_CONF"] == nil {
            let softhsm = try HSMProfile.find("softhsm2", in: [TestHSM.profileDirectory])
            _ = try EmbeddedToken(profile: softhsm, directory: hsm.directory.appendingPathComponent("softhsm-cks"), label: label).prepare()
        }
        let module = try PKCS11Module(path: Self.softHSMModule)
        let slot = try #require(try module.uninitializedSlot())
        try module.initializeToken(slot: slot, label: label, soPIN: PIN("so-12345678"), userPIN: PIN(pin))
        return module
    }

    func labels(_ module: PKCS11Module, token label: String, pin: String, _ wanted: [String]) throws -> Set<String> {
        // The process is logged in already while the store is connected: this login is a no-op, and this token
        // object is never closed (closing would log the store out).
        let token = try Token(module: module, label: label, pin: PIN(pin))
        return try Set(wanted.filter { name in
            try !token.withSession { session throws(PKCS11Error) in
                try session.findObjects(matching: [.objectClass(.secretKey), Attribute(.label, string: name)])
            }.isEmpty
        })
    }

    func roundTrip(_ service: KeyManagementService, _ key: KeyRecord) async throws {
        let plaintext = Array("in the second token".utf8)
        let blob = try await service.encrypt(
            keyID: key.id.description, plaintext: plaintext, context: EncryptionContext(["k": "v"]), algorithm: nil, dryRun: nil, caller: caller
        ).ciphertextBlob
        let opened = try await service.decrypt(ciphertext: blob, context: EncryptionContext(["k": "v"]), keyID: nil, algorithm: nil, dryRun: nil, caller: caller)
        #expect(opened.plaintext == plaintext)
    }

    @Test func keysLiveInTheStoreTokenAndOnlyTrentsObjectsAreDestroyed() async throws {
        let label = "cks-\(UUID().uuidString.prefix(8))"
        let pin = "cks-pin-\(UUID().uuidString.prefix(8))"
        let module = try makeSecondToken(label: label, pin: pin)
        let operatorKey = "op-\(UUID().uuidString.prefix(8))"
        do {
            let setup = try Token(module: module, label: label, pin: PIN(pin))
            _ = try setup.withSession { session throws(PKCS11Error) in
                try session.generateKey(.aesKeyGen, template: [
                    .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32), Attribute(.token, true),
                    Attribute(.private, true), Attribute(.sensitive, true), Attribute(.extractable, false),
                    Attribute(.encrypt, true), Attribute(.decrypt, true), Attribute(.label, string: operatorKey),
                ])
            }
            setup.close()
        }
        let softhsm = try HSMProfile.find("softhsm2", in: [TestHSM.profileDirectory])
        let cluster = "cluster-swifttestsecond"
        let tokens = PKCS11CustomKeyStoreTokens(
            declarations: [CustomKeyStoreTokenDeclaration(clusterID: cluster, modulePath: Self.softHSMModule, tokenLabel: label, profile: softhsm)], logger: Logger(label: "trent.tests"))
        let clock = ManualClock()
        let fixture = try await hsm.makeService(clock: clock, nonceBudget: 4, reservationBlock: 2, customKeyStoreTokens: tokens)
        let service = fixture.service

        let storeID = try await service.createCustomKeyStore(
            .init(name: "swift-tests", clusterID: cluster, trustAnchorCertificate: "anchor", password: pin, type: nil), caller: caller)
        try await service.connectCustomKeyStore(storeID, caller: caller)
        let described = try await service.describeCustomKeyStores(id: storeID, name: nil, limit: nil, marker: nil, caller: caller).items
        #expect(described.first?.state == .connected)

        let generated = try await service.createKey(.init(origin: "AWS_CLOUDHSM", customKeyStoreID: storeID), caller: caller)
        let referenced = try await service.createKey(
            .init(origin: "EXTERNAL_KEY_STORE", customKeyStoreID: storeID, xksKeyID: operatorKey), caller: caller)
        try await roundTrip(service, generated)
        try await roundTrip(service, referenced)
        #expect(try labels(module, token: label, pin: pin, [generated.id.description, operatorKey]) == [generated.id.description, operatorKey])
        // The PIN is stored only sealed.
        #expect(!fixture.databaseBytes().containsSequence(Array(pin.utf8)))

        // Material that cannot be renewed stops at its nonce budget (4 here; 2 used by the round trip).
        for _ in 0..<3 {
            _ = try await service.encrypt(keyID: generated.id.description, plaintext: [1], context: EncryptionContext([:]), algorithm: nil, dryRun: nil, caller: caller)
        }
        await #expect(throws: KMSError.self) {
            _ = try await service.encrypt(keyID: generated.id.description, plaintext: [1], context: EncryptionContext([:]), algorithm: nil, dryRun: nil, caller: caller)
        }

        for key in [generated, referenced] {
            _ = try await service.scheduleKeyDeletion(key.id.description, pendingWindowInDays: 7, caller: caller)
        }
        clock.advance(by: 7 * 86_400)
        #expect(Set(try await service.destroyExpiredKeys()) == [generated.id, referenced.id])
        // Trent's own object is gone; the operator's is still there.
        #expect(try labels(module, token: label, pin: pin, [generated.id.description, operatorKey]) == [operatorKey])

        try await service.disconnectCustomKeyStore(storeID, caller: caller)
        try await service.deleteCustomKeyStore(storeID, caller: caller)
    }
}
