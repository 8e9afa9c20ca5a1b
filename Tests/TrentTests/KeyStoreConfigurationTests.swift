import Foundation
import Testing
@testable import trent

/// `keyStores:`: the PKCS#11 tokens offered to custom key stores, declared only in the configuration.
@Suite struct KeyStoreConfigurationTests {
    @Test func declaredTokensAreRead() throws {
        let configuration = try TrentConfiguration.parse(
            """
            keyStores:
              - cloudHsmClusterId: cluster-payments2hsm
                tokenLabel: payments
              - {cloudHsmClusterId: cluster-paymentsbackup, tokenLabel: payments, module: /usr/lib/softhsm/libsofthsm2.so, profile: softhsm2}
            """, source: "test.yaml")
        #expect(configuration.keyStores.map(\.cloudHsmClusterId) == ["cluster-payments2hsm", "cluster-paymentsbackup"])
        #expect(configuration.keyStores[0].module == "" && configuration.keyStores[0].profile == "")
        #expect(configuration.keyStores[1].module == "/usr/lib/softhsm/libsofthsm2.so")
        #expect(TrentConfiguration().keyStores.isEmpty)
    }

    @Test(arguments: [
        "keyStores:\n  - {cloudHsmClusterId: cluster-payments2hsm, tokenLabel: p, pin: secret}\n",  // unknown setting (and no PINs here)
        "keyStores:\n  - {cloudHsmClusterId: cluster-pay_ments, tokenLabel: p}\n",  // not the cluster id pattern
        "keyStores:\n  - {cloudHsmClusterId: cluster-payments2hsm}\n",  // no token label
        "keyStores:\n  - {cloudHsmClusterId: cluster-payments2hsm, tokenLabel: a}\n  - {cloudHsmClusterId: cluster-payments2hsm, tokenLabel: b}\n",
        "keyStores: payments\n",
    ])
    func mistakesAreRefused(text: String) {
        #expect(throws: StartupError.self) { _ = try TrentConfiguration.parse(text, source: "test.yaml") }
    }
}
