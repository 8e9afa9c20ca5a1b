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
            try FileManager.default.createDirectory(at: tokens, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try discardInterruptedCreation()
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
    public func initialize(_ module: PKCS11Module, soPIN: () throws -> PIN, userPIN: () throws -> PIN) throws {
        switch profile.tokenSetup {
        case .initToken:
            guard try module.slot(forTokenLabel: label) == nil else { return }
            guard let slot = try module.uninitializedSlot() else {
                throw HSMSetupError("the module offers no free slot to create token '\(label)'")
            }
            let (so, user) = (try soPIN(), try userPIN())
            try markCreation()
            try module.initializeToken(slot: slot, label: label, soPIN: so, userPIN: user)
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

    /// Ends a creation ``initialize(_:soPIN:userPIN:)`` began, once Trent's keys are in the token: until then a kill
    /// leaves the marker, and the next start makes the token again (SoftHSM writes a generated key's object file in
    /// pieces too; a key cut short answered `CKR_MECHANISM_INVALID` to every later C_EncryptInit).
    public func finishCreation() throws {
        guard FileManager.default.fileExists(atPath: creationMarker.path) else { return }
        try FileManager.default.removeItem(at: creationMarker)
    }

    // MARK: A SoftHSM token whose creation was cut short

    private var tokens: URL { directory.appendingPathComponent("tokens", isDirectory: true) }

    /// Present while a SoftHSM token is being made, from before C_InitToken until Trent's keys are in it; it lists
    /// the token folders that existed before. SoftHSM's C_InitToken writes a new token's folder and its token.object a
    /// piece at a time, and C_InitPIN and the keys come after it: a process killed in between leaves a token no one can
    /// log in to (C_GetTokenInfo fails, or the SO or user PIN is missing) or a key that cannot be used, and the next
    /// start would stop on it for good.
    private var creationMarker: URL { directory.appendingPathComponent("creating-token") }

    private func markCreation() throws {
        let existing = try FileManager.default.contentsOfDirectory(atPath: tokens.path).sorted()
        try Data(existing.map { $0 + "\n" }.joined().utf8).write(to: creationMarker, options: .atomic)
    }

    /// Before the module is loaded: removes the token folders a cut-short creation made (no key of theirs wraps
    /// anything yet: the marker goes only once Trent's keys exist, before the store is used), so the token is made
    /// again from the start.
    private func discardInterruptedCreation() throws {
        guard let listing = FileManager.default.contents(atPath: creationMarker.path) else { return }
        let before = Set(String(decoding: listing, as: UTF8.self).split(separator: "\n").map(String.init))
        for name in try FileManager.default.contentsOfDirectory(atPath: tokens.path) where !before.contains(name) {
            try FileManager.default.removeItem(at: tokens.appendingPathComponent(name, isDirectory: true))
        }
        try FileManager.default.removeItem(at: creationMarker)
    }
}
