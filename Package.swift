// swift-tools-version:6.2
import PackageDescription

/// Settings every Trent target shares: Swift 6 strict concurrency plus the upcoming features the
/// Swift server ecosystem (Hummingbird, NIO) builds with, so every re-export is a visible `public import`.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "trent",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "trent", targets: ["trent"]),
        .library(name: "KMS", targets: ["KMS"]),
        .library(name: "PKCS11", targets: ["PKCS11"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // C boundary: p11-kit's pkcs11.h, imported only by PKCS11.
        .systemLibrary(name: "CPKCS11", pkgConfig: "p11-kit-1", providers: [.apt(["libp11-kit-dev"])]),
        .target(
            name: "PKCS11",
            dependencies: ["CPKCS11", .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: swiftSettings,
            linkerSettings: [.linkedLibrary("dl")]
        ),
        // Wire formats of JSON: the strict reader, the value, the canonical writer. No KMS rules.
        .target(name: "JSON", swiftSettings: swiftSettings),
        // The KMS domain: model, rules, ports. No C, no SQL, no HTTP, no NIO.
        .target(
            name: "KMS",
            dependencies: [
                "JSON", .product(name: "Logging", package: "swift-log"), .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "KMSHSM",
            dependencies: [
                "KMS", "PKCS11",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "KMSSQLite",
            dependencies: ["KMS", .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: swiftSettings
        ),
        // The tamper-evident audit trail: a SHA-256 hash chain of records plus digests signed in the token.
        .target(
            name: "KMSAudit",
            dependencies: [
                "KMS", "JSON",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        // AWS JSON 1.1 and SigV4 without a transport: operations' wire shapes, authentication, the request
        // pipeline and its CloudTrail records. No HTTP library, so parsers and the pipeline can be fuzzed alone.
        .target(
            name: "KMSProtocol",
            dependencies: [
                "KMS", "JSON",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        // The HTTP listener (Hummingbird) in front of KMSProtocol's handler.
        .target(
            name: "KMSServer",
            dependencies: [
                "KMS", "KMSProtocol",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "trent",
            dependencies: [
                "JSON", "KMS", "KMSAudit", "KMSHSM", "KMSProtocol", "KMSSQLite", "KMSServer", "PKCS11",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        // Coverage-guided fuzzing of every parser of untrusted bytes (Tests/Fuzz, docs/reliability.md): one executable
        // with all the targets. A normal build makes a corpus replayer; `make fuzz` builds it with libFuzzer and ASan.
        .executableTarget(
            name: "TrentFuzz",
            dependencies: ["JSON", "KMS", "KMSProtocol", "KMSAudit", "KMSHSM"],
            path: "Tests/Fuzz/Sources",
            swiftSettings: swiftSettings
        ),
        // Shared by the test targets only: a SoftHSM token per test process.
        .target(
            name: "TrentTestSupport",
            dependencies: [
                "PKCS11", "KMS", "KMSHSM", "KMSSQLite",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/TrentTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PKCS11Tests",
            dependencies: [
                "PKCS11", "KMSHSM", "TrentTestSupport", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KMSHSMTests",
            dependencies: [
                "KMSHSM", "KMS", "PKCS11", "KMSSQLite", "TrentTestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KMSSQLiteTests",
            dependencies: ["KMSSQLite", "KMS", "TrentTestSupport", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KMSTests",
            dependencies: ["KMS", "KMSHSM", "KMSSQLite", "TrentTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KMSAuditTests",
            dependencies: [
                "KMSAudit", "KMS", "JSON", "TrentTestSupport", "KMSHSM", .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "TrentTests", dependencies: ["trent"], swiftSettings: swiftSettings),
        .testTarget(name: "KMSAuthorizationTests", dependencies: ["KMS", "JSON"], swiftSettings: swiftSettings),
        .testTarget(
            name: "KMSProtocolTests",
            dependencies: [
                "KMSProtocol", "KMS", "JSON",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
