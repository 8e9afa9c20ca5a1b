public import Foundation
public import PKCS11

/// A token Trent creates and owns in a folder of its own, SoftHSM or NSS softoken, set up the way its HSM
/// profile says: the one procedure behind `trent serve`'s embedded token and the test suites' token.
public struct EmbeddedToken: Sendable {
    public let profile: HSMProfile
    public let directory: URL
    public let label: String

    public init(profile: HSMProfile, directory: URL, label: String) {
        self.profile = profile
        self.directory = directory
        self.label = label
    }

    /// Prepares the folder before the module is loaded and returns the init string the module needs, if any.
    /// SoftHSM gets a private softhsm2.conf through `SOFTHSM2_CONF` (read once, in `C_Initialize`); NSS softoken
    /// is told its database folder and token label by the init string.
    public func prepare() throws -> String? {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        switch profile.tokenSetup {
        case .initToken:
            let tokens = directory.appendingPathComponent("tokens", isDirectory: true)
            try FileManager.default.createDirectory(at: tokens, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let conf = directory.appendingPathComponent("softhsm2.conf")
            let text = """
                # Written by trent for its embedded SoftHSM token.
                directories.tokendir = \(tokens.path)
                objectstore.backend = file
                log.level = ERROR
                slots.removable = false

                """
            try text.write(to: conf, atomically: true, encoding: .utf8)
            setenv("SOFTHSM2_CONF", conf.path, 1)
            return nil
        case .initPINWithEmptySOPIN:
            guard let template = profile.initStringTemplate else {
                throw HSMSetupError("HSM profile '\(profile.name)' has no initStringTemplate for an embedded token")
            }
            return template.replacingOccurrences(of: "{directory}", with: directory.path).replacingOccurrences(of: "{label}", with: label)
        case .vendorTool:
            throw HSMSetupError("profile '\(profile.name)' tokens are created with the vendor's tools; set hsm.embeddedToken to none")
        }
    }

    /// Creates the token and its user PIN unless they exist. The PINs are asked for only when needed.
    ///
    /// A process killed between `C_InitToken` and `C_InitPIN` leaves a token with no user PIN: the next call
    /// finishes it with the PINs kept in the folder (both files are written before `C_InitToken`).
    public func initialize(_ module: PKCS11Module, soPIN: () throws -> PIN, userPIN: () throws -> PIN) throws {
        switch profile.tokenSetup {
        case .initToken:
            if let slot = try module.slot(forTokenLabel: label) {
                if try !module.tokenInfo(slot: slot).isUserPINInitialized {
                    try module.initializeUserPIN(slot: slot, soPIN: try soPIN(), userPIN: try userPIN())
                }
                return
            }
            guard let slot = try module.uninitializedSlot() else {
                throw HSMSetupError("the module offers no free slot to create token '\(label)'")
            }
            try module.initializeToken(slot: slot, label: label, soPIN: try soPIN(), userPIN: try userPIN())
        case .initPINWithEmptySOPIN:
            guard let slot = try module.slot(forTokenLabel: label, requireInitialized: false) else {
                throw HSMSetupError("the module shows no token labelled '\(label)'")
            }
            guard try !module.tokenInfo(slot: slot).isUserPINInitialized else { return }
            try module.initializeUserPIN(slot: slot, soPIN: PIN(""), userPIN: try userPIN())
        case .vendorTool:
            throw HSMSetupError("profile '\(profile.name)' tokens are created with the vendor's tools")
        }
    }
}
