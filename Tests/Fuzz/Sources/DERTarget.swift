import KMS
@testable import KMSHSM

/// The DER Trent reads from callers and tokens: SubjectPublicKeyInfo (DeriveSharedSecret's peer key, stored
/// public keys), the EC point attribute, ECDH's on-curve check; and the PKCS#8 and SPKI it writes, read back.
///
/// Input: the whole input is a SubjectPublicKeyInfo, an EC point attribute and a tree of TLVs; its bytes also
/// make the parts of the PKCS#8 keys written and read back.
///
/// Properties: no trap; an EC SPKI that parses writes back the same bytes and an RSA one the same key; what
/// passes DeriveSharedSecret's host-side check is an uncompressed point on the key's curve; a point attribute
/// that parses is an uncompressed point of the curve's size; PKCS#8 and SPKI written from any parts read back
/// as the same parts.
enum DERTarget {
    static let target = FuzzTarget(name: "der", maximumLength: 2048, summary: "DER: SubjectPublicKeyInfo, EC points, ECDH peer keys, PKCS#8") { bytes in
        run(bytes)
    }

    static let rsaEncryption: [UInt8] = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01]
    static let curves: [(KeyPairSpec, AsymmetricEncoding.Curve)] = [
        (.eccNistP256, AsymmetricEncoding.p256), (.eccNistP384, AsymmetricEncoding.p384), (.eccNistP521, AsymmetricEncoding.p521),
        (.eccSecgP256k1, AsymmetricEncoding.secp256k1),
    ]

    static func run(_ bytes: [UInt8]) {
        if let key = try? AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: bytes) {
            let written = AsymmetricEncoding.subjectPublicKeyInfo(key)
            check((try? AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: written)) == key, "an SPKI written from a parsed key parses differently")
            switch key {
            case .ec(let curve, let point):
                check(written == bytes, "an EC SPKI that parsed is not written back as the same bytes")
                // DeriveSharedSecret's host-side check of the peer's key, for each key agreement curve.
                for (spec, known) in curves where known.parameters == curve {
                    if PKCS11KeyProvider.isOnCurve(point, spec) {
                        check(point.count == 1 + 2 * known.fieldLength && point.first == 0x04, "a peer point that is not uncompressed passed the curve check")
                    }
                }
            case .rsa:
                // The reader does not look at the algorithm's parameters of an RSA key (Trent reads RSA SPKIs it wrote
                // itself only); with the usual NULL they are written back byte for byte.
                if algorithmIdentifier(of: bytes) == rsaEncryption + DER.null { check(written == bytes, "an RSA SPKI is not written back as the same bytes") }
            }
        }

        for (_, curve) in curves {
            if let point = try? AsymmetricEncoding.point(fromECPointAttribute: bytes, curve: curve) {
                check(point.count == 1 + 2 * curve.fieldLength && point.first == 0x04, "CKA_EC_POINT gave a point of the wrong shape")
            }
        }

        walk(bytes, depth: 0)
        checkWriters(bytes)
    }

    static func algorithmIdentifier(of spki: [UInt8]) -> [UInt8]? {
        guard var info = try? DER.single(.sequence, in: spki), let algorithm = try? info.read(.sequence) else { return nil }
        return Array(algorithm)
    }

    static let tags: [DER.Tag] = [.integer, .bitString, .octetString, .null, .objectIdentifier, .sequence, .contextConstructed1]

    /// Reads any tree of the tags Trent knows, as deep as it goes: the reader never traps, whatever the lengths.
    static func walk(_ bytes: [UInt8], depth: Int) {
        guard depth < 16 else { return }
        var reader = DER.Reader(bytes)
        elements: while !reader.isAtEnd {
            for tag in tags {
                var attempt = reader
                guard let content = try? attempt.read(tag) else { continue }
                if tag == .integer {
                    var integer = reader
                    if let magnitude = try? integer.readUnsignedInteger() {
                        check(magnitude.count <= content.count && magnitude.first != 0, "an INTEGER's magnitude")
                    }
                }
                if tag == .sequence || tag == .contextConstructed1 { walk(Array(content), depth: depth + 1) }
                reader = attempt
                continue elements
            }
            return
        }
    }

    /// PKCS#8 (GenerateDataKeyPair's private keys) and SPKI written from parts the input makes, read back.
    static func checkWriters(_ bytes: [UInt8]) {
        var parts = bytes.pieces(separator: 0x00).map { Array($0.prefix(600)) }
        while parts.count < 8 { parts.append([UInt8(parts.count + 1)]) }

        let rsa = AsymmetricEncoding.pkcs8(
            .rsa(
                modulus: parts[0], publicExponent: parts[1], privateExponent: parts[2], prime1: parts[3], prime2: parts[4], exponent1: parts[5],
                exponent2: parts[6], coefficient: parts[7]))
        check(readRSAPrivateKey(rsa) == parts.prefix(8).map(magnitude), "a PKCS#8 RSA key does not read back as its parts")

        for (_, curve) in curves {
            let point = [0x04] + Array(parts[1].prefix(2 * curve.fieldLength))
            let ec = AsymmetricEncoding.pkcs8(.ec(curve: curve, privateValue: parts[0], point: point))
            guard let (parameters, scalar, readPoint) = readECPrivateKey(ec) else {
                check(false, "a PKCS#8 EC key does not read back")
                return
            }
            check(parameters == curve.parameters, "the curve of a PKCS#8 EC key")
            check(scalar.count == curve.fieldLength, "the private scalar is \(scalar.count) bytes, not \(curve.fieldLength)")
            check(scalar.drop(while: { $0 == 0 }).elementsEqual(parts[0].suffix(curve.fieldLength).drop(while: { $0 == 0 })), "the private scalar")
            check(readPoint == point, "the public point of a PKCS#8 EC key")
            let spki = AsymmetricEncoding.subjectPublicKeyInfo(.ec(curve: curve.parameters, point: point))
            check((try? AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: spki)) == .ec(curve: curve.parameters, point: point), "an EC SPKI written does not read back")
        }
        let spki = AsymmetricEncoding.subjectPublicKeyInfo(.rsa(modulus: parts[0], exponent: parts[1]))
        check(
            (try? AsymmetricEncoding.publicKey(fromSubjectPublicKeyInfo: spki)) == .rsa(modulus: magnitude(parts[0]), exponent: magnitude(parts[1])),
            "an RSA SPKI written does not read back")
    }

    static func magnitude(_ bytes: [UInt8]) -> [UInt8] { Array(bytes.drop(while: { $0 == 0 })) }

    static func readRSAPrivateKey(_ pkcs8: [UInt8]) -> [[UInt8]]? {
        guard var info = try? DER.single(.sequence, in: pkcs8), (try? info.readUnsignedInteger()) == [],
            let algorithm = try? info.read(.sequence), Array(algorithm) == rsaEncryption + DER.null,
            let octets = try? info.read(.octetString), (try? info.requireEnd()) != nil,
            var key = try? DER.single(.sequence, in: octets), (try? key.readUnsignedInteger()) == []
        else { return nil }
        var parts: [[UInt8]] = []
        for _ in 0..<8 {
            guard let part = try? key.readUnsignedInteger() else { return nil }
            parts.append(part)
        }
        guard (try? key.requireEnd()) != nil else { return nil }
        return parts
    }

    static func readECPrivateKey(_ pkcs8: [UInt8]) -> (parameters: [UInt8], scalar: [UInt8], point: [UInt8])? {
        let ecPublicKey: [UInt8] = [0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]
        guard var info = try? DER.single(.sequence, in: pkcs8), (try? info.readUnsignedInteger()) == [],
            let algorithm = try? info.read(.sequence), algorithm.starts(with: ecPublicKey),
            let octets = try? info.read(.octetString), (try? info.requireEnd()) != nil,
            var key = try? DER.single(.sequence, in: octets), (try? key.readUnsignedInteger()) == [1],
            let scalar = try? key.read(.octetString), let tagged = try? key.read(.contextConstructed1), (try? key.requireEnd()) != nil
        else { return nil }
        var publicKey = DER.Reader(tagged)
        guard let bitString = try? publicKey.read(.bitString), (try? publicKey.requireEnd()) != nil, bitString.first == 0 else { return nil }
        return (Array(algorithm.dropFirst(ecPublicKey.count)), Array(scalar), Array(bitString.dropFirst()))
    }
}
