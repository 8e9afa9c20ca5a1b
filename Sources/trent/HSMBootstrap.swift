import Foundation
import KMS
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
        if configuration.isEmbeddedToken {
            initString = try embeddedToken(profile).prepare() ?? initString
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
            let directory = embeddedDirectory
            try embeddedToken(profile).initialize(
                module,
                soPIN: { PIN(try SecretFile.createRandom(directory.appendingPathComponent("so-pin"))) },
                userPIN: { PIN(try SecretFile.createRandom(directory.appendingPathComponent("user-pin"))) })
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

    /// Creates Trent's keys in the token where they are missing. An embedded token's creation ends only here, once
    /// its keys exist (``EmbeddedToken/finishCreation()``).
    @discardableResult
    func ensureKeys(in token: Token, profile: HSMProfile) throws -> [String] {
        let created = try TokenKeys.ensure(in: token, labels: configuration.tokenKeyLabels, profile: profile)
        if configuration.isEmbeddedToken { try embeddedToken(profile).finishCreation() }
        return created
    }

    /// Opens the token for a setup command (`trent token init`, `probe`), runs `body` on it, and finalises the module.
    func withSetupToken<R>(createMissing: Bool, _ body: (Token, HSMProfile) throws -> R) throws -> R {
        let (token, profile) = try openToken(createMissing: createMissing)
        defer {
            token.retire()
            token.module.finalize()
        }
        return try body(token, profile)
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

    private func embeddedToken(_ profile: HSMProfile) -> EmbeddedToken {
        EmbeddedToken(profile: profile, directory: embeddedDirectory, label: configuration.hsm.tokenLabel)
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
        let secret = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }.hexString
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
