import Foundation
import KMSHSM
import PKCS11

/// Opens the configured token: loads the HSM profile and the module, finds the token by label and logs in
/// once. An embedded token (SoftHSM or NSS softoken in the data directory) is created on first run, with a
/// random PIN kept in a 0600 file.
struct HSMBootstrap {
    let configuration: TrentConfiguration

    /// Where the embedded token keeps its configuration, database and PINs.
    var embeddedDirectory: URL {
        configuration.dataDirectoryURL.appendingPathComponent(configuration.hsm.embeddedToken == "nss-softoken" ? "nss" : "softhsm", isDirectory: true)
    }

    func loadProfile() throws -> HSMProfile {
        try HSMProfile.find(configuration.profileName, in: configuration.profileDirectories)
    }

    /// Opens the token; with `createMissing`, also creates an embedded token.
    func openToken(createMissing: Bool) throws -> (Token, HSMProfile) {
        let hsm = configuration.hsm
        let profile = try loadProfile()
        let modulePath = hsm.module.isEmpty ? (profile.defaultModule ?? "") : hsm.module
        var initString = hsm.initString.isEmpty ? nil : hsm.initString
        switch hsm.embeddedToken {
        case "softhsm2": try prepareEmbeddedSoftHSM()
        case "nss-softoken": initString = try prepareEmbeddedNSS(profile)
        default: break
        }
        guard FileManager.default.fileExists(atPath: modulePath) else {
            throw StartupError("PKCS#11 module '\(modulePath)' does not exist: install it or set hsm.module / TRENT_HSM_MODULE")
        }
        let module: PKCS11Module
        do {
            module = try PKCS11Module(path: modulePath, initString: initString)
        } catch {
            throw StartupError("cannot initialise PKCS#11 module \(modulePath): \(error)")
        }
        if configuration.isEmbeddedToken, createMissing {
            try initializeEmbeddedToken(module, profile: profile)
        }
        let pin = try readPIN()
        do {
            let token = try Token(
                module: module, label: hsm.tokenLabel, pin: pin, maxIdleSessions: max(64, hsm.threads * 2), gcm: profile.gcmConvention)
            return (token, profile)
        } catch let error where error.returnValue == .tokenNotPresent {
            throw StartupError("no initialised token labelled '\(hsm.tokenLabel)' in \(modulePath): set hsm.tokenLabel / TRENT_HSM_TOKEN_LABEL, or initialise the token")
        } catch let error where error.returnValue == .pinIncorrect || error.returnValue == .pinInvalid || error.returnValue == .pinLenRange {
            throw StartupError("the PIN for token '\(hsm.tokenLabel)' is wrong: check TRENT_HSM_PIN or hsm.pinFile")
        } catch let error where error.returnValue == .pinLocked {
            throw StartupError("the user PIN of token '\(hsm.tokenLabel)' is locked: unlock it with the security officer PIN")
        } catch {
            throw StartupError("cannot log in to token '\(hsm.tokenLabel)': \(error)")
        }
    }

    /// The user PIN: TRENT_HSM_PIN, else the PIN file (the embedded token's own file in embedded mode).
    func readPIN() throws -> PIN {
        if let pin = ProcessInfo.processInfo.environment["TRENT_HSM_PIN"], !pin.isEmpty { return PIN(pin) }
        var file = configuration.hsm.pinFile
        if file.isEmpty && configuration.isEmbeddedToken {
            file = embeddedDirectory.appendingPathComponent("user-pin").path
        }
        guard !file.isEmpty else {
            throw StartupError("no PIN for token '\(configuration.hsm.tokenLabel)': set TRENT_HSM_PIN or hsm.pinFile / TRENT_HSM_PIN_FILE")
        }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw StartupError("cannot read the PIN file \(file)")
        }
        return PIN(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Writes a private softhsm2.conf and points SOFTHSM2_CONF at it, before the module is loaded
    /// (SoftHSM reads it once, in C_Initialize).
    private func prepareEmbeddedSoftHSM() throws {
        let tokens = embeddedDirectory.appendingPathComponent("tokens", isDirectory: true)
        try SecretFile.makeDirectory(tokens)
        let conf = embeddedDirectory.appendingPathComponent("softhsm2.conf")
        let text = """
            # Written by trent for its embedded SoftHSM token.
            directories.tokendir = \(tokens.path)
            objectstore.backend = file
            log.level = ERROR
            slots.removable = false

            """
        try text.write(to: conf, atomically: true, encoding: .utf8)
        setenv("SOFTHSM2_CONF", conf.path, 1)
    }

    /// NSS softoken keeps its key database in a folder named by the init string, which also names the token.
    private func prepareEmbeddedNSS(_ profile: HSMProfile) throws -> String {
        try SecretFile.makeDirectory(embeddedDirectory)
        guard let template = profile.initStringTemplate else {
            throw StartupError("HSM profile '\(profile.name)' has no initStringTemplate for an embedded NSS token")
        }
        return template.replacingOccurrences(of: "{directory}", with: embeddedDirectory.path)
            .replacingOccurrences(of: "{label}", with: configuration.hsm.tokenLabel)
    }

    /// Creates the embedded token and its user PIN the way the profile says this kind of token takes one.
    private func initializeEmbeddedToken(_ module: PKCS11Module, profile: HSMProfile) throws {
        let label = configuration.hsm.tokenLabel
        switch profile.tokenSetup {
        case .initToken:
            guard try module.slot(forTokenLabel: label) == nil else { return }
            guard let slot = try module.uninitializedSlot() else {
                throw StartupError("the module offers no free slot to create token '\(label)'")
            }
            let userPIN = try SecretFile.createRandom(embeddedDirectory.appendingPathComponent("user-pin"))
            let soPIN = try SecretFile.createRandom(embeddedDirectory.appendingPathComponent("so-pin"))
            try module.initializeToken(slot: slot, label: label, soPIN: PIN(soPIN), userPIN: PIN(userPIN))
        case .initPINWithEmptySOPIN:
            guard let slot = try module.slot(forTokenLabel: label, requireInitialized: false) else {
                throw StartupError("the module shows no token labelled '\(label)'")
            }
            guard try !module.tokenInfo(slot: slot).isUserPINInitialized else { return }
            let userPIN = try SecretFile.createRandom(embeddedDirectory.appendingPathComponent("user-pin"))
            try module.initializeUserPIN(slot: slot, soPIN: PIN(""), userPIN: PIN(userPIN))
        case .vendorTool:
            throw StartupError("profile '\(profile.name)' tokens are created with the vendor's tools; set hsm.embeddedToken to none")
        }
    }
}

/// Files that hold secrets: created 0600 in 0700 folders, never overwritten once they exist.
enum SecretFile {
    static func makeDirectory(_ url: URL) throws {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    /// Returns the file's content, creating it with 32 random hex characters first if it does not exist.
    static func createRandom(_ url: URL) throws -> String {
        if let existing = try? String(contentsOf: url, encoding: .utf8) {
            return existing.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var generator = SystemRandomNumberGenerator()
        let secret = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        try write(secret, to: url)
        return secret
    }

    static func write(_ text: String, to url: URL) throws {
        try makeDirectory(url.deletingLastPathComponent())
        guard FileManager.default.createFile(atPath: url.path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw StartupError("cannot write \(url.path)")
        }
    }
}
