public import Foundation
public import KMS
public import PKCS11

/// How one kind of token behaves behind the same pkcs11.h, as data (`Config/hsm/<name>.json`): the code reads
/// these quirks instead of branching on vendor names.
public struct HSMProfile: Codable, Sendable, Equatable {
    /// How a new token gets its user PIN.
    public enum TokenSetup: String, Codable, Sendable {
        /// `C_InitToken` with an SO PIN, then `C_InitPIN` as SO (SoftHSM).
        case initToken = "init-token"
        /// `C_InitPIN` as SO with an empty SO PIN, once (NSS softoken's new key database).
        case initPINWithEmptySOPIN = "init-pin-with-empty-so-pin"
        /// The vendor's own tools create tokens and PINs (hardware HSMs).
        case vendorTool = "vendor-tool"
    }

    public struct GCM: Codable, Sendable, Equatable {
        public var ivSource: GCMConvention.IVSource
        public var parameterLayout: GCMConvention.ParameterLayout
    }

    public struct KeyWrap: Codable, Sendable, Equatable {
        /// The mechanism code of RFC 3394 AES key wrap (used for backing keys).
        public var rfc3394: String
        /// The mechanism code of RFC 5649 AES key wrap with padding, when the token has it.
        public var rfc5649: String?
    }

    public struct AllowedMechanisms: Codable, Sendable, Equatable {
        /// Whether the token refuses a mechanism outside a key's `CKA_ALLOWED_MECHANISMS`.
        public var enforced: Bool
        /// Where it is not enforced: what keeps Trent safe without it.
        public var compensation: String?
    }

    public enum KeyPairFamily: String, Codable, Sendable {
        case rsa = "RSA"
        case ec = "EC"
    }

    /// How the token's `C_UnwrapKey` of a private key Trent wrapped differs from the standard.
    public struct PrivateKeyUnwrap: Codable, Sendable, Equatable {
        /// What an extra template attribute holds, taken from the key's stored SubjectPublicKeyInfo.
        public enum Value: String, Codable, Sendable {
            /// The uncompressed public point `04 || X || Y` (not the DER OCTET STRING of `CKA_EC_POINT`).
            case ecPublicPoint = "ec-public-point"
        }

        public struct TemplateAttribute: Codable, Sendable, Equatable {
            /// A `CKA_*` name the PKCS#11 binding knows (`CKA_NSS_DB`) or a code in hex (`0xD5A0DB00`).
            public var type: String
            public var value: Value
        }

        /// Usage attributes the token sets to true on the unwrapped key, per family, whatever the template asks.
        public struct ForcedTrue: Codable, Sendable, Equatable {
            public var rsa: [String]
            public var ec: [String]

            enum CodingKeys: String, CodingKey {
                case rsa = "RSA"
                case ec = "EC"
            }
        }

        /// An attribute the token needs in the template of an EC private key's unwrap besides the standard ones
        /// (NSS softoken: `CKA_NSS_DB` holding the public point); null for tokens that need none, which may refuse it
        /// (SoftHSM: `CKR_ATTRIBUTE_TYPE_INVALID`).
        public var ecTemplateAttribute: TemplateAttribute?
        /// Recorded so nobody relies on them: a key's `CKA_SIGN`, `CKA_DERIVE` or `CKA_DECRYPT` in the token does not
        /// say what the KMS key may do. Trent's service layer decides that from the key usage (a SIGN_VERIFY key never
        /// derives, a KEY_AGREEMENT key never signs) before the token is asked.
        public var forcedTrue: ForcedTrue
    }

    public struct Limits: Codable, Sendable, Equatable {
        public var maxSessions: Int?
        public var maxObjects: Int?
    }

    /// The file's name without `.json`.
    public var name: String
    public var displayName: String
    /// Whether Trent's test suite runs on this token. Untested profiles are written from vendor documentation.
    public var tested: Bool
    public var testedVersions: String?
    public var defaultModule: String?
    /// For `C_Initialize`'s `pReserved`; `{directory}` and `{label}` are filled in for embedded tokens.
    public var initStringTemplate: String?
    public var tokenSetup: TokenSetup
    public var gcm: GCM
    public var keyWrap: KeyWrap
    /// Return values that mean a failed AES-GCM tag check on decrypt.
    public var authenticationFailureCodes: [String]
    /// Return values that mean a wrong MAC or signature on verify.
    public var macFailureCodes: [String]
    public var allowedMechanisms: AllowedMechanisms
    /// Whether the token refuses to wrap a key whose `CKA_EXTRACTABLE` is false. Where it does not, anyone holding
    /// the PIN can export the domain key: use such a token for development and tests only.
    public var enforcesNonExtractable: Bool
    /// The key-pair families whose private keys the token can wrap under the domain key and unwrap again
    /// (`RSA`, `EC`), with ``privateKeyUnwrap``'s template where it names one: asymmetric KMS keys of other
    /// families are refused at CreateKey.
    public var keyPairFamilies: [KeyPairFamily]
    /// The curves the token generates keys on (`P-256`, `P-384`, `P-521`, `secp256k1`); absent means all four. EC key
    /// pairs on another curve, KMS keys and data key pairs alike, are refused with UnsupportedOperationException.
    public var ecCurves: [String]?
    /// Absent or null: the token unwraps private keys as the standard says, with the template Trent gives.
    public var privateKeyUnwrap: PrivateKeyUnwrap?
    /// What the token lacks for ECC_NIST_EDWARDS25519 KMS keys (EdDSA), as measured: CreateKey's
    /// UnsupportedOperationException says it. Trent keeps an Ed25519 key only in a token that wraps and unwraps its
    /// private key under the domain key and signs both Ed25519 and Ed25519ph itself; no profile here has all of that.
    public var eddsaUnavailable: String?
    /// The hashes the token's `CKM_RSA_PKCS_OAEP` takes (`SHA-1`, `SHA-256`). For an RSAES-OAEP algorithm whose hash is
    /// missing, the token does raw RSA (`CKM_RSA_X_509`) and Trent pads on the host; only then may RSA private keys
    /// do raw RSA at all (their `CKA_ALLOWED_MECHANISMS`).
    public var rsaOAEPDigests: [String]
    /// Copy long-lived token keys into session objects at start (much faster on tokens that re-read storage per use).
    public var copyTokenKeysToSession: Bool
    public var limits: Limits
    /// How long Trent waits for the token; absent means ``Deadlines/standard``.
    public var deadlines: Deadlines?
    public var notes: [String]

    public struct Deadlines: Codable, Sendable, Equatable {
        /// The deadline of each PKCS#11 task (one request's few calls): past it the request is answered
        /// `DependencyTimeoutException`. A network HSM's own timeouts are often tens of seconds; a request should not be.
        public var callSeconds: Double

        public static let standard = Deadlines(callSeconds: 10)
    }

    public var callDeadline: Duration { .milliseconds(Int64(max(0.001, (deadlines ?? .standard).callSeconds) * 1000)) }

    // MARK: Typed views

    public var gcmConvention: GCMConvention { GCMConvention(ivSource: gcm.ivSource, parameterLayout: gcm.parameterLayout) }

    public func rfc3394Mechanism() throws -> MechanismType { try Self.mechanism(keyWrap.rfc3394, "keyWrap.rfc3394") }

    public func authenticationFailures() throws -> Set<PKCS11Error.ReturnValue> { try Set(authenticationFailureCodes.map(Self.returnValue)) }

    public func macFailures() throws -> Set<PKCS11Error.ReturnValue> { try Set(macFailureCodes.map(Self.returnValue)) }

    /// Whether the token does RSAES-OAEP with this hash itself.
    public func tokenDoesOAEP(with digest: DigestAlgorithm) -> Bool { rsaOAEPDigests.contains(digest.profileName) }

    /// Whether some RSAES-OAEP algorithm of the API needs raw RSA in the token (see ``rsaOAEPDigests``).
    public var needsRawRSA: Bool { RSAEncryptionAlgorithm.allCases.contains { !tokenDoesOAEP(with: $0.digest) } }

    /// The curve names ``ecCurves`` takes.
    public static let curveNames = ["P-256", "P-384", "P-521", "secp256k1"]

    /// Whether the token generates keys on the curve of `spec` (RSA specs: true).
    public func generatesCurve(of spec: KeyPairSpec) -> Bool {
        guard let curve = AsymmetricEncoding.curve(of: spec) else { return true }
        return ecCurves?.contains(curve.name) ?? true
    }

    /// The extra attribute of an EC private key's unwrap template, for the key whose SubjectPublicKeyInfo holds
    /// `point` (uncompressed), or nil where the token needs none.
    public func ecUnwrapAttribute(publicPoint point: [UInt8]) throws -> Attribute? {
        guard let extra = privateKeyUnwrap?.ecTemplateAttribute else { return nil }
        let type = try Self.attributeType(extra.type, "privateKeyUnwrap.ecTemplateAttribute.type")
        switch extra.value {
        case .ecPublicPoint: return Attribute(type, bytes: point)
        }
    }

    /// The usage attributes the token turns on whatever the unwrap template says (``PrivateKeyUnwrap/forcedTrue``).
    public func forcedTrueOnUnwrap(_ family: KeyPairFamily) throws -> [AttributeType] {
        guard let forced = privateKeyUnwrap?.forcedTrue else { return [] }
        let names = family == .rsa ? forced.rsa : forced.ec
        return try names.map { try Self.attributeType($0, "privateKeyUnwrap.forcedTrue.\(family.rawValue)") }
    }

    static func attributeType(_ text: String, _ field: String) throws -> AttributeType {
        guard let type = AttributeType(name: text) else { throw HSMSetupError("HSM profile: \(field) '\(text)' is not an attribute name or code") }
        return type
    }

    static func mechanism(_ text: String, _ field: String) throws -> MechanismType {
        guard let mechanism = MechanismType(name: text) else { throw HSMSetupError("HSM profile: \(field) '\(text)' is not a mechanism name or code") }
        return mechanism
    }

    static func returnValue(_ text: String) throws -> PKCS11Error.ReturnValue {
        guard let value = PKCS11Error.ReturnValue(name: text) else { throw HSMSetupError("HSM profile: '\(text)' is not a CKR name or code") }
        return value
    }

    // MARK: Loading

    /// Reads and checks a profile file.
    public static func load(from url: URL) throws -> HSMProfile {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw HSMSetupError("cannot read HSM profile \(url.path)")
        }
        let profile: HSMProfile
        do {
            profile = try JSONDecoder().decode(HSMProfile.self, from: data)
        } catch {
            throw HSMSetupError("HSM profile \(url.path) is not valid: \(error)")
        }
        _ = try profile.rfc3394Mechanism()
        _ = try profile.authenticationFailures()
        _ = try profile.macFailures()
        for curve in profile.ecCurves ?? [] where !curveNames.contains(curve) {
            throw HSMSetupError("HSM profile \(url.path): ecCurves lists '\(curve)'; the curves are \(curveNames.joined(separator: ", "))")
        }
        _ = try profile.ecUnwrapAttribute(publicPoint: [])
        _ = try profile.forcedTrueOnUnwrap(.rsa)
        _ = try profile.forcedTrueOnUnwrap(.ec)
        for digest in profile.rsaOAEPDigests where !["SHA-1", "SHA-256"].contains(digest) {
            throw HSMSetupError("HSM profile \(url.path): rsaOAEPDigests lists '\(digest)'; the RSAES-OAEP hashes are SHA-1 and SHA-256")
        }
        return profile
    }

    /// Finds `nameOrPath`: a path to a `.json` file, or a profile name looked up in `directories` in order.
    public static func find(_ nameOrPath: String, in directories: [URL]) throws -> HSMProfile {
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".json") {
            return try load(from: URL(fileURLWithPath: nameOrPath))
        }
        for directory in directories {
            let candidate = directory.appendingPathComponent("\(nameOrPath).json")
            if FileManager.default.fileExists(atPath: candidate.path) { return try load(from: candidate) }
        }
        throw HSMSetupError(
            "no HSM profile '\(nameOrPath)' in \(directories.map(\.path).joined(separator: ", ")): set hsm.profileDirectory / TRENT_HSM_PROFILE_DIR")
    }
}

extension DigestAlgorithm {
    /// How HSM profiles spell the hash.
    var profileName: String {
        switch self {
        case .sha1: "SHA-1"
        case .sha256: "SHA-256"
        case .sha384: "SHA-384"
        case .sha512: "SHA-512"
        }
    }
}
