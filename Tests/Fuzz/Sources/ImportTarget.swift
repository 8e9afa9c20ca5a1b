import Foundation
@testable import KMS
@testable import KMSHSM

/// Imported key material: the import token's sealed content (ImportToken's JSON, read with JSONDecoder once
/// the token's AES-GCM opens) and what ImportKeyMaterial's host side does with the wrapped material before the
/// token: the host OAEP decoding of the RSA part for hashes the token's OAEP lacks.
///
/// Opening the token (AES-GCM under the sealing key), unwrapping into the token and the token's own OAEP need a
/// token and are left to the suites on SoftHSM and NSS.
///
/// The split of EncryptedKeyMaterial into its RSA and AES parts (prefix and rest, after a length check) happens
/// inside PKCS11KeyProvider.importKeyMaterial, which needs a provider, and is not fuzzed here.
///
/// Input: an import token's content; its first byte also picks the wrapping algorithm and spec, and the input
/// is also the RSA part of EncryptedKeyMaterial.
///
/// Properties: no trap; a token that decodes encodes back to a token that decodes equal; OAEP decoding of the
/// RSA part refuses or decodes, within the block.
enum ImportTarget {
    static let target = FuzzTarget(name: "import-token", maximumLength: 4096, summary: "ImportToken content, wrapped key material on the host") { bytes in
        run(bytes)
    }

    static func run(_ bytes: [UInt8]) {
        if let token = try? ImportToken(decoding: bytes) {
            guard let encoded = try? token.encoded() else {
                check(false, "a decoded import token does not encode")
                return
            }
            guard let again = try? ImportToken(decoding: encoded) else {
                check(false, "an encoded import token does not decode: \(String(decoding: encoded, as: UTF8.self))")
                return
            }
            check(again.keyID == token.keyID && again.algorithm == token.algorithm && again.wrappingKey == token.wrappingKey, "an import token changed across a round trip")
            check(again.validTo == token.validTo || (again.validTo.timeIntervalSince1970.isNaN && token.validTo.timeIntervalSince1970.isNaN), "validTo changed across a round trip")
        }

        guard let selector = bytes.first else { return }
        let algorithms = WrappingAlgorithm.allCases
        let algorithm = algorithms[Int(selector) % algorithms.count]
        let specs = KeyPairSpec.allCases
        let spec = specs[Int(selector >> 3) % specs.count]
        guard let digest = algorithm.oaepDigest, let bits = spec.rsaModulusBits else { return }
        let modulusLength = bits / 8
        // The host's OAEP decoding of the RSA part (PKCS11KeyProvider.unwrapRSA, for hashes the token's OAEP lacks),
        // fed the part itself as the raw RSA result: the token's raw result is whatever the caller's bytes decrypt to.
        let rsaPart = Array(bytes.prefix(modulusLength))
        if let value = AsymmetricEncoding.oaepDecode(rsaPart, modulusLength: modulusLength, digest) {
            check(value.count <= modulusLength - 2 * digest.length - 2, "OAEP decoded more than a block holds")
        }
    }
}
