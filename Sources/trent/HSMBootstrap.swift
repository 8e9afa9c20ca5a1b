import Foundation
import KMSHSM
import PKCS11

/// Opens the configured token: loads the module, finds the token by label and logs in once. In embedded
/// mode it first creates a SoftHSM token inside the data directory (with a random PIN kept in a 0600 file).
struct HSMBootstrap {
    let configuration: TrentConfiguration

    /// Where the embedded SoftHSM keeps its configuration, tokens and PINs.
    var softHSMDirectory: URL { configuration.dataDirectoryURL.appendingPathComponent("softhsm", isDirectory: true) }

    /// Opens the token; with `createMissing`, also initialises an embedded token and the domain key.
    func openToken(createMissing: Bool) throws -> Token {
        let hsm = configuration.hsm
        if hsm.embeddedSoftHSM { try prepareEmbeddedSoftHSM() }
        guard FileManager.default.fileExists(atPath: hsm.module) else {
            throw StartupError("PKCS#11 module \(hsm.module) does not exist: install it (apt-get install softhsm2) or set hsm.module / TRENT_HSM_MODULE")
        }
        let module: PKCS11Module
        do {
            module = try PKCS11Module(path: hsm.module, initString: hsm.initString.isEmpty ? nil : hsm.initString)
        } catch {
            throw StartupError("cannot initialise PKCS#11 module \(hsm.module): \(error)")
        }
        if hsm.embeddedSoftHSM, createMissing, try module.slot(forTokenLabel: hsm.tokenLabel) == nil {
            try initializeEmbeddedToken(module)
        }
        let pin = try readPIN()
        do {
            return try Token(module: module, label: hsm.tokenLabel, pin: pin, maxIdleSessions: max(64, hsm.threads * 2))
        } catch let error where error.returnValue == .tokenNotPresent {
            throw StartupError("no initialised token labelled '\(hsm.tokenLabel)' in \(hsm.module): set hsm.tokenLabel / TRENT_HSM_TOKEN_LABEL, or initialise the token")
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
        if file.isEmpty && configuration.hsm.embeddedSoftHSM {
            file = softHSMDirectory.appendingPathComponent("user-pin").path
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
        let tokens = softHSMDirectory.appendingPathComponent("tokens", isDirectory: true)
        try SecretFile.makeDirectory(tokens)
        let conf = softHSMDirectory.appendingPathComponent("softhsm2.conf")
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

    private func initializeEmbeddedToken(_ module: PKCS11Module) throws {
        guard let slot = try module.uninitializedSlot() else {
            throw StartupError("SoftHSM offers no free slot to create token '\(configuration.hsm.tokenLabel)'")
        }
        let userPIN = try SecretFile.createRandom(softHSMDirectory.appendingPathComponent("user-pin"))
        let soPIN = try SecretFile.createRandom(softHSMDirectory.appendingPathComponent("so-pin"))
        try module.initializeToken(slot: slot, label: configuration.hsm.tokenLabel, soPIN: PIN(soPIN), userPIN: PIN(userPIN))
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
