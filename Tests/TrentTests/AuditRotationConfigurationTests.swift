import Foundation
import KMSAudit
import Testing
@testable import trent

/// audit.rotateBytes / audit.rotateSeconds: the defaults, the environment, 0 for never, and negative values refused.
@Suite struct AuditRotationConfigurationTests {
    @Test func theDefaultsRotateDailyOrAt256MiB() {
        #expect(TrentConfiguration().audit.rotation == AuditRotation(maximumBytes: 256 << 20, maximumAge: 86_400))
    }

    @Test func theEnvironmentSetsThemAndZeroMeansNever() throws {
        var configuration = TrentConfiguration()
        try configuration.applyEnvironment(["TRENT_AUDIT_ROTATE_BYTES": "4096", "TRENT_AUDIT_ROTATE_SECONDS": "0"])
        #expect(configuration.audit.rotation == AuditRotation(maximumBytes: 4096, maximumAge: nil))
        let file = try TrentConfiguration.parse("audit:\n  rotateBytes: 0\n  rotateSeconds: 3600\n", source: "test")
        #expect(file.audit.rotation == AuditRotation(maximumBytes: nil, maximumAge: 3600))
    }

    @Test func negativeValuesStopStartupWithOneLine() {
        for name in ["TRENT_AUDIT_ROTATE_BYTES", "TRENT_AUDIT_ROTATE_SECONDS"] {
            var configuration = TrentConfiguration()
            #expect(throws: StartupError.self, "\(name)=-1") { try configuration.applyEnvironment([name: "-1"]) }
        }
    }
}
