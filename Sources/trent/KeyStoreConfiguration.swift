import Foundation
import KMSHSM

extension TrentConfiguration {
    /// A PKCS#11 token offered to custom key stores (`keyStores:` in trent.yaml). CreateCustomKeyStore names it
    /// by `cloudHsmClusterId`; its user PIN is the key store's KeyStorePassword, given through the API.
    struct KeyStore: Codable, Equatable {
        /// `cluster-` followed by 11 to 16 letters or digits 2-7 (the CloudHSM cluster id format, which boto3 and
        /// the AWS CLI check).
        var cloudHsmClusterId = ""
        /// The PKCS#11 module; empty means the profile's default module.
        var module = ""
        var tokenLabel = ""
        /// The token's HSM profile (`Config/hsm/<name>.json` or a path); empty means softhsm2.
        var profile = ""
        /// Passed to C_Initialize when this token's module is loaded first.
        var initString = ""
        /// A PEM file: when set, CreateCustomKeyStore's TrustAnchorCertificate must equal it.
        var trustAnchorCertificateFile = ""

        static let settings: Set<String> = ["cloudHsmClusterId", "module", "tokenLabel", "profile", "initString", "trustAnchorCertificateFile"]

        init() {}

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            cloudHsmClusterId = try container.decodeIfPresent(String.self, forKey: .cloudHsmClusterId) ?? ""
            module = try container.decodeIfPresent(String.self, forKey: .module) ?? ""
            tokenLabel = try container.decodeIfPresent(String.self, forKey: .tokenLabel) ?? ""
            profile = try container.decodeIfPresent(String.self, forKey: .profile) ?? ""
            initString = try container.decodeIfPresent(String.self, forKey: .initString) ?? ""
            trustAnchorCertificateFile = try container.decodeIfPresent(String.self, forKey: .trustAnchorCertificateFile) ?? ""
        }

        static func isValidClusterID(_ id: String) -> Bool {
            guard id.hasPrefix("cluster-") else { return false }
            let suffix = id.dropFirst(8)
            return (11...16).contains(suffix.count)
                && suffix.allSatisfy { ("2"..."7").contains($0) || ("a"..."z").contains($0) || ("A"..."Z").contains($0) }
        }
    }

    /// Refuses `keyStores` entries with settings Trent does not know (a typo must not be ignored).
    static func checkKeyStoreEntries(_ overrides: [String: Any], source: String) throws {
        guard let entries = overrides["keyStores"] else { return }
        guard let list = entries as? [Any] else { throw StartupError("\(source): 'keyStores' must be a list") }
        for (index, entry) in list.enumerated() {
            guard let mapping = entry as? [String: Any] else { throw StartupError("\(source): keyStores[\(index)] must be a mapping") }
            for key in mapping.keys where !KeyStore.settings.contains(key) {
                throw StartupError("\(source): 'keyStores[\(index)].\(key)' is not a Trent setting")
            }
        }
    }

    func validateKeyStores() throws {
        var seen: Set<String> = []
        for (index, store) in keyStores.enumerated() {
            guard KeyStore.isValidClusterID(store.cloudHsmClusterId) else {
                throw StartupError(
                    "keyStores[\(index)].cloudHsmClusterId must be 'cluster-' and 11 to 16 letters or digits 2-7, not '\(store.cloudHsmClusterId)'")
            }
            guard seen.insert(store.cloudHsmClusterId).inserted else {
                throw StartupError("keyStores: cluster id '\(store.cloudHsmClusterId)' is declared twice")
            }
            guard !store.tokenLabel.isEmpty else { throw StartupError("keyStores[\(index)].tokenLabel must be set") }
        }
    }

    /// Resolves each declared token's profile, module and trust anchor. Trent's own token is refused: a key
    /// store must be another token.
    func customKeyStoreDeclarations(mainModulePath: String) throws -> [CustomKeyStoreTokenDeclaration] {
        try keyStores.map { store in
            let profile = try HSMProfile.find(store.profile.isEmpty ? "softhsm2" : store.profile, in: profileDirectories)
            let module = store.module.isEmpty ? (profile.defaultModule ?? "") : store.module
            guard !module.isEmpty else {
                throw StartupError("keyStores '\(store.cloudHsmClusterId)': set its module (profile '\(profile.name)' names none)")
            }
            if store.tokenLabel == hsm.tokenLabel && URL(fileURLWithPath: module).resolvingSymlinksInPath() == URL(fileURLWithPath: mainModulePath).resolvingSymlinksInPath() {
                throw StartupError("keyStores '\(store.cloudHsmClusterId)' names Trent's own token '\(hsm.tokenLabel)': a custom key store must be another token")
            }
            var anchor: String?
            if !store.trustAnchorCertificateFile.isEmpty {
                guard let text = try? String(contentsOfFile: store.trustAnchorCertificateFile, encoding: .utf8) else {
                    throw StartupError("keyStores '\(store.cloudHsmClusterId)': cannot read \(store.trustAnchorCertificateFile)")
                }
                anchor = text
            }
            return CustomKeyStoreTokenDeclaration(
                clusterID: store.cloudHsmClusterId, modulePath: module, tokenLabel: store.tokenLabel,
                initString: store.initString.isEmpty ? nil : store.initString, profile: profile, trustAnchorCertificate: anchor)
        }
    }
}
