import Crypto
import KMS
import PKCS11

/// The host side of asymmetric keys: what the token hands over or takes (moduli, EC points, raw `r || s`)
/// turned into the encodings AWS KMS speaks (SubjectPublicKeyInfo, PKCS#8, DER ECDSA signatures), plus
/// the hashing and OAEP padding the token cannot be relied on for.
enum AsymmetricEncoding {
    // MARK: Curves

    struct Curve: Sendable {
        /// The curve's OID as a DER OBJECT IDENTIFIER (what `CKA_EC_PARAMS` holds).
        var parameters: [UInt8]
        /// Bytes in a field element (and in each of r and s).
        var fieldLength: Int
        var name: String
    }

    static let p256 = Curve(parameters: [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07], fieldLength: 32, name: "P-256")
    static let p384 = Curve(parameters: [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22], fieldLength: 48, name: "P-384")
    static let p521 = Curve(parameters: [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23], fieldLength: 66, name: "P-521")
    static let secp256k1 = Curve(parameters: [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A], fieldLength: 32, name: "secp256k1")

    static func curve(of spec: KeyPairSpec) -> Curve? {
        switch spec {
        case .eccNistP256: p256
        case .eccNistP384: p384
        case .eccNistP521: p521
        case .eccSecgP256k1: secp256k1
        case .rsa2048, .rsa3072, .rsa4096: nil
        }
    }

    private static let rsaEncryption: [UInt8] = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01]
    private static let ecPublicKey: [UInt8] = [0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]

    // MARK: Public keys

    /// A public key as the token describes it.
    enum PublicKey: Equatable {
        case rsa(modulus: [UInt8], exponent: [UInt8])
        /// The uncompressed point `04 || x || y`.
        case ec(curve: [UInt8], point: [UInt8])
    }

    static func subjectPublicKeyInfo(_ key: PublicKey) -> [UInt8] {
        switch key {
        case .rsa(let modulus, let exponent):
            let rsaPublicKey = DER.sequence(DER.unsignedInteger(modulus), DER.unsignedInteger(exponent))
            return DER.sequence(DER.sequence(rsaEncryption, DER.null), DER.bitString(rsaPublicKey))
        case .ec(let curve, let point):
            return DER.sequence(DER.sequence(ecPublicKey, curve), DER.bitString(point))
        }
    }

    /// Reads a SubjectPublicKeyInfo of an RSA or EC key; anything else is malformed.
    static func publicKey(fromSubjectPublicKeyInfo spki: [UInt8]) throws(DER.Malformed) -> PublicKey {
        var info = try DER.single(.sequence, in: spki)
        var algorithm = DER.Reader(try info.read(.sequence))
        let bits = try info.read(.bitString)
        try info.requireEnd()
        guard bits.first == 0 else { throw DER.Malformed() }
        let keyBytes = Array(bits.dropFirst())
        let oid = DER.encode(.objectIdentifier, Array(try algorithm.read(.objectIdentifier)))
        if oid == rsaEncryption {
            var key = try DER.single(.sequence, in: keyBytes)
            let modulus = try key.readUnsignedInteger()
            let exponent = try key.readUnsignedInteger()
            try key.requireEnd()
            return .rsa(modulus: modulus, exponent: exponent)
        }
        guard oid == ecPublicKey else { throw DER.Malformed() }
        let curve = try algorithm.read(.objectIdentifier)
        try algorithm.requireEnd()
        return .ec(curve: DER.encode(.objectIdentifier, Array(curve)), point: keyBytes)
    }

    /// `CKA_EC_POINT` wraps the uncompressed point in an OCTET STRING (SoftHSM and NSS both do); some tokens
    /// give it bare. The length tells which.
    static func point(fromECPointAttribute value: [UInt8], curve: Curve) throws(DER.Malformed) -> [UInt8] {
        let point: [UInt8]
        if value.count == 1 + 2 * curve.fieldLength {
            point = value
        } else {
            var reader = DER.Reader(value)
            point = Array(try reader.read(.octetString))
            try reader.requireEnd()
        }
        guard point.count == 1 + 2 * curve.fieldLength, point.first == 0x04 else { throw DER.Malformed() }
        return point
    }

    // MARK: Private keys (data key pairs only: KMS keys never leave the token)

    enum PrivateKey {
        case rsa(modulus: [UInt8], publicExponent: [UInt8], privateExponent: [UInt8], prime1: [UInt8], prime2: [UInt8],
                 exponent1: [UInt8], exponent2: [UInt8], coefficient: [UInt8])
        case ec(curve: Curve, privateValue: [UInt8], point: [UInt8])
    }

    /// PKCS#8 PrivateKeyInfo, as GenerateDataKeyPair returns it.
    static func pkcs8(_ key: PrivateKey) -> [UInt8] {
        switch key {
        case .rsa(let n, let e, let d, let p, let q, let dp, let dq, let qinv):
            let rsaPrivateKey = DER.sequence(
                DER.smallInteger(0), DER.unsignedInteger(n), DER.unsignedInteger(e), DER.unsignedInteger(d), DER.unsignedInteger(p),
                DER.unsignedInteger(q), DER.unsignedInteger(dp), DER.unsignedInteger(dq), DER.unsignedInteger(qinv))
            return DER.sequence(DER.smallInteger(0), DER.sequence(rsaEncryption, DER.null), DER.encode(.octetString, rsaPrivateKey))
        case .ec(let curve, let privateValue, let point):
            let scalar = Array(repeating: 0, count: max(0, curve.fieldLength - privateValue.count)) + privateValue.suffix(curve.fieldLength)
            let ecPrivateKey = DER.sequence(
                DER.smallInteger(1), DER.encode(.octetString, scalar), DER.encode(.contextConstructed1, DER.bitString(point)))
            return DER.sequence(DER.smallInteger(0), DER.sequence(ecPublicKey, curve.parameters), DER.encode(.octetString, ecPrivateKey))
        }
    }

    // MARK: Signatures

    /// The token's raw ECDSA output `r || s` as the DER `SEQUENCE { r, s }` AWS returns.
    static func derSignature(fromRaw raw: [UInt8]) -> [UInt8] {
        let half = raw.count / 2
        return DER.sequence(DER.unsignedInteger(Array(raw.prefix(half))), DER.unsignedInteger(Array(raw.suffix(half))))
    }

    /// A DER ECDSA signature as the token's `r || s`, each padded to the field length.
    static func rawSignature(fromDER der: [UInt8], fieldLength: Int) throws(DER.Malformed) -> [UInt8] {
        var sequence = try DER.single(.sequence, in: der)
        let r = try sequence.readUnsignedInteger()
        let s = try sequence.readUnsignedInteger()
        try sequence.requireEnd()
        guard r.count <= fieldLength, s.count <= fieldLength else { throw DER.Malformed() }
        return [UInt8](repeating: 0, count: fieldLength - r.count) + r + [UInt8](repeating: 0, count: fieldLength - s.count) + s
    }

    /// PKCS#1 v1.5 signs a DigestInfo; the token pads it, Trent builds it (so RAW and DIGEST take one path).
    static func digestInfo(_ digest: [UInt8], _ algorithm: DigestAlgorithm) -> [UInt8] {
        let prefix: [UInt8] =
            switch algorithm {
            case .sha1: [0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A, 0x05, 0x00, 0x04, 0x14]
            case .sha256: [0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20]
            case .sha384: [0x30, 0x41, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30]
            case .sha512: [0x30, 0x51, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40]
            }
        return prefix + digest
    }

    // MARK: Hashing

    static func hash(_ data: some Sequence<UInt8>, _ algorithm: DigestAlgorithm) -> [UInt8] {
        let bytes = Array(data)
        switch algorithm {
        case .sha1: return Array(Insecure.SHA1.hash(data: bytes))
        case .sha256: return Array(SHA256.hash(data: bytes))
        case .sha384: return Array(SHA384.hash(data: bytes))
        case .sha512: return Array(SHA512.hash(data: bytes))
        }
    }

    // MARK: RSAES-OAEP (RFC 8017 §7.1), for the hashes the token's OAEP lacks

    /// MGF1 with `algorithm`.
    static func mgf1(_ seed: [UInt8], length: Int, _ algorithm: DigestAlgorithm) -> [UInt8] {
        var output: [UInt8] = []
        var counter: UInt32 = 0
        while output.count < length {
            let counterBytes = (0..<4).map { UInt8(truncatingIfNeeded: counter >> (24 - 8 * $0)) }
            output += hash(seed + counterBytes, algorithm)
            counter += 1
        }
        return Array(output.prefix(length))
    }

    /// EME-OAEP encoding of `message` into a `modulusLength`-byte block, with the empty label.
    static func oaepEncode(_ message: [UInt8], modulusLength k: Int, seed: [UInt8], _ algorithm: DigestAlgorithm) -> [UInt8] {
        let hLen = algorithm.length
        let labelHash = hash([UInt8](), algorithm)
        let dataBlock = labelHash + [UInt8](repeating: 0, count: k - message.count - 2 * hLen - 2) + [0x01] + message
        let maskedDB = zip(dataBlock, mgf1(seed, length: k - hLen - 1, algorithm)).map { $0 ^ $1 }
        let maskedSeed = zip(seed, mgf1(maskedDB, length: hLen, algorithm)).map { $0 ^ $1 }
        return [0x00] + maskedSeed + maskedDB
    }

    /// EME-OAEP decoding. Every failure is the same `nil`, found without branching on secret bytes until the
    /// end, so the answer says nothing about which check failed (Manger's attack).
    static func oaepDecode(_ encoded: [UInt8], modulusLength k: Int, _ algorithm: DigestAlgorithm) -> [UInt8]? {
        let hLen = algorithm.length
        guard k >= 2 * hLen + 2 else { return nil }
        let block = [UInt8](repeating: 0, count: max(0, k - encoded.count)) + encoded.suffix(k)
        let maskedSeed = Array(block[1...hLen])
        let maskedDB = Array(block[(hLen + 1)...])
        let seed = zip(maskedSeed, mgf1(maskedDB, length: hLen, algorithm)).map { $0 ^ $1 }
        let dataBlock = zip(maskedDB, mgf1(seed, length: k - hLen - 1, algorithm)).map { $0 ^ $1 }
        let labelHash = hash([UInt8](), algorithm)

        var bad = block[0]
        for (expected, actual) in zip(labelHash, dataBlock) { bad |= expected ^ actual }
        // Find the 0x01 separator after the zero padding, in constant time over the block.
        var separatorIndex = 0
        var found: UInt8 = 0
        for index in hLen..<dataBlock.count {
            let byte = dataBlock[index]
            let isOne: UInt8 = byte == 1 ? 1 : 0
            let isZero: UInt8 = byte == 0 ? 1 : 0
            let takeThis = isOne & ~found & 1
            separatorIndex = takeThis == 1 ? index : separatorIndex
            bad |= (~found & 1) & (~isZero & 1) & (~isOne & 1)
            found |= isOne
        }
        bad |= ~found & 1
        guard bad == 0 else { return nil }
        return Array(dataBlock[(separatorIndex + 1)...])
    }
}
