import Foundation
import KMS
import KMSHSM
import PKCS11
import Testing
import TrentTestSupport

/// The HSM profiles in Config/hsm: each one loads, and the profile of the token under test tells the truth
/// about it (every live probe check passes).
@Suite struct HSMProfileTests {
    static let profileFiles = (try? FileManager.default.contentsOfDirectory(atPath: TestHSM.profileDirectory.path))?
        .filter { $0.hasSuffix(".json") }.sorted() ?? []

    @Test func everyVendorHasAProfile() {
        #expect(Self.profileFiles == ["cloudhsm.json", "luna.json", "nshield.json", "nss-softoken.json", "softhsm2.json", "yubihsm2.json"])
    }

    @Test(arguments: profileFiles)
    func profilesLoadAndSayWhetherTheyAreTested(file: String) throws {
        let profile = try HSMProfile.load(from: TestHSM.profileDirectory.appendingPathComponent(file))
        #expect(profile.name + ".json" == file)
        #expect(profile.tested == ["softhsm2", "nss-softoken"].contains(profile.name))
        if !profile.tested { #expect(profile.notes.first?.hasPrefix("Untested") == true) }
        #expect(try profile.rfc3394Mechanism() == .aesKeyWrap)
        #expect(try !profile.authenticationFailures().isEmpty)
    }

    /// NSS softoken's EC unwrap needs its vendor attribute, holding the public point; its secp256k1 gap and the usage
    /// attributes it forces on are recorded as data. SoftHSM needs nothing of the kind.
    @Test func theTestedProfilesRecordTheirPrivateKeyUnwrap() throws {
        let nss = try HSMProfile.load(from: TestHSM.profileDirectory.appendingPathComponent("nss-softoken.json"))
        #expect(nss.keyPairFamilies == [.rsa, .ec])
        #expect(try nss.ecUnwrapAttribute(publicPoint: [4, 1, 2]) == Attribute(AttributeType(rawValue: 0xD5A0_DB00), bytes: [4, 1, 2]))
        #expect(nss.generatesCurve(of: .eccNistP521) && !nss.generatesCurve(of: .eccSecgP256k1) && nss.generatesCurve(of: .rsa4096))
        #expect(try nss.forcedTrueOnUnwrap(.ec) == [.sign, .signRecover, .derive])
        #expect(try nss.forcedTrueOnUnwrap(.rsa) == [.decrypt, .sign, .signRecover, .unwrap])

        let softHSM = try HSMProfile.load(from: TestHSM.profileDirectory.appendingPathComponent("softhsm2.json"))
        #expect(try softHSM.ecUnwrapAttribute(publicPoint: [4, 1, 2]) == nil)
        #expect(softHSM.generatesCurve(of: .eccSecgP256k1))
        #expect(try softHSM.forcedTrueOnUnwrap(.ec).isEmpty && softHSM.forcedTrueOnUnwrap(.rsa).isEmpty)
    }

    @Test(arguments: [
        (#""ecCurves": ["P-256", "P-384", "P-521"]"#, #""ecCurves": ["P-192"]"#, "ecCurves lists 'P-192'"),
        (#""type": "CKA_NSS_DB""#, #""type": "CKA_NOT_AN_ATTRIBUTE""#, "'CKA_NOT_AN_ATTRIBUTE' is not an attribute name or code"),
        (#""value": "ec-public-point""#, #""value": "ec-private-value""#, "is not valid"),
        (#""EC": ["CKA_SIGN","#, #""EC": ["CKA_SIGNS","#, "'CKA_SIGNS' is not an attribute name or code"),
    ])
    func aProfileWithAnUnknownCurveOrAttributeIsRefused(field: String, replacement: String, message: String) throws {
        let text = try String(contentsOf: TestHSM.profileDirectory.appendingPathComponent("nss-softoken.json"), encoding: .utf8)
        #expect(text.contains(field))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("profile-\(UUID().uuidString).json")
        try text.replacingOccurrences(of: field, with: replacement).write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect { _ = try HSMProfile.load(from: file) } throws: { "\($0)".contains(message) }
    }

    @Test func theTokenUnderTestMatchesItsProfile() throws {
        let hsm = try TestHSM.shared()
        let checks = try TokenProbe.run(on: hsm.token, profile: hsm.profile)
        for check in checks where check.required {
            #expect(check.passed, "\(check.feature): \(check.detail)")
        }
        try TokenProbe.requireMechanisms(of: hsm.token, profile: hsm.profile)
    }
}
