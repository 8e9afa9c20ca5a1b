@testable import KMS
@testable import KMSHSM

/// What Decrypt, ReEncrypt and Verify read from the caller before the token sees anything: the symmetric
/// ciphertext blob, and on the host side of RSA and ECDSA keys the EME-OAEP decoding (for hashes the token's
/// OAEP lacks) and the DER ECDSA signature.
///
/// Input: the whole input is a ciphertext blob; its first byte also picks the OAEP hash and modulus and the
/// ECDSA field length, and the rest is the OAEP block, the OAEP message and the DER signature.
///
/// Properties: no trap; a blob that parses writes back the same bytes; OAEP decodes what it encodes (for every
/// message that fits) and refuses without trapping whatever else; a DER signature that reads as `r || s` is
/// the exact DER written back from it (the reader accepts distinguished encodings only).
enum CiphertextTarget {
    static let target = FuzzTarget(name: "ciphertext", maximumLength: 2048, summary: "CiphertextBlob, RSA OAEP decoding, DER ECDSA signatures") { bytes in
        run(bytes)
    }

    static let digests: [DigestAlgorithm] = [.sha1, .sha256, .sha384, .sha512]

    static func run(_ bytes: [UInt8]) {
        // The symmetric blob.
        if let blob = try? CiphertextBlob(parsing: bytes, region: "us-east-1") {
            check(blob.bytes == bytes, "a parsed ciphertext blob does not write back its bytes")
            check(blob.iv.count == CiphertextBlob.ivLength, "the IV is \(blob.iv.count) bytes")
            check(blob.sealed.count >= CiphertextBlob.tagLength, "no room for the GCM tag")
            check(CiphertextBlob.header(keyID: blob.keyID, backingKeyVersion: blob.backingKeyVersion) == Array(bytes.prefix(CiphertextBlob.headerLength)), "header")
            check((try? CiphertextBlob(parsing: blob.bytes, region: "us-east-1")) == blob, "a blob does not parse back equal")
        } else {
            check(bytes.count < CiphertextBlob.minimumLength || bytes.first != CiphertextBlob.formatVersion, "a well-formed blob was refused")
        }

        guard let selector = bytes.first else { return }
        let rest = Array(bytes.dropFirst())
        let digest = digests[Int(selector & 0x03)]
        // The moduli of RSA_2048/3072/4096, and (to reach the length checks) whatever the selector says.
        let moduli = [256, 384, 512, Int(selector >> 2) * 4]
        let modulusLength = moduli[Int(selector >> 2) % moduli.count]

        // Decoding an arbitrary block: refused or decoded, never a trap.
        if let decoded = AsymmetricEncoding.oaepDecode(rest, modulusLength: modulusLength, digest) {
            check(decoded.count <= modulusLength - 2 * digest.length - 2, "OAEP decoded \(decoded.count) bytes out of a \(modulusLength)-byte block")
        }
        // Encoding then decoding a message that fits.
        let capacity = modulusLength - 2 * digest.length - 2
        if capacity >= 0 {
            let message = Array(rest.prefix(capacity))
            let seed = Array(AsymmetricEncoding.hash(bytes, .sha512).prefix(digest.length))
            let encoded = AsymmetricEncoding.oaepEncode(message, modulusLength: modulusLength, seed: seed, digest)
            check(encoded.count == modulusLength, "OAEP encoded into \(encoded.count) bytes, not \(modulusLength)")
            check(AsymmetricEncoding.oaepDecode(encoded, modulusLength: modulusLength, digest) == message, "OAEP does not decode what it encoded")
            // One flipped bit anywhere in the block makes it undecodable (or, in the seed or the data block's
            // message part, decodes to something else): never a trap.
            var damaged = encoded
            let position = Int(selector) % damaged.count
            damaged[position] ^= 0x01
            _ = AsymmetricEncoding.oaepDecode(damaged, modulusLength: modulusLength, digest)
        }

        // A DER ECDSA signature for each field length (P-256 and secp256k1, P-384, P-521).
        for fieldLength in [32, 48, 66] {
            guard let raw = try? AsymmetricEncoding.rawSignature(fromDER: rest, fieldLength: fieldLength) else { continue }
            check(raw.count == 2 * fieldLength, "r || s is \(raw.count) bytes for a field of \(fieldLength)")
            check(AsymmetricEncoding.derSignature(fromRaw: raw) == rest, "a DER signature that parsed is not the DER of its r || s")
        }
    }
}
