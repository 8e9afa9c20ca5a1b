import Foundation
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

    @Test func theTokenUnderTestMatchesItsProfile() throws {
        let hsm = try TestHSM.shared()
        let checks = try TokenProbe.run(on: hsm.token, profile: hsm.profile)
        for check in checks where check.required {
            #expect(check.passed, "\(check.feature): \(check.detail)")
        }
        try TokenProbe.requireMechanisms(of: hsm.token, profile: hsm.profile)
    }
}
