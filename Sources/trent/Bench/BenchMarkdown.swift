import Foundation

/// The report as Markdown tables (what `docs/performance.md` quotes).
enum BenchMarkdown {
    static func render(_ report: BenchReport) -> String {
        var lines: [String] = []
        lines.append("## Trent benchmark, \(report.date)")
        lines.append("")
        lines.append(
            "\(report.cores) cores, load average before \(report.loadAverageBefore), after \(report.loadAverageAfter ?? "?"); "
                + "\(report.connections) connections, closed loop, \(fmt(report.durationSeconds, 0)) s measured after \(fmt(report.warmupSeconds, 0)) s warm-up per row; "
                + "server \(report.endpoint)\(report.serverHSMThreads.map { ", hsm.threads \($0)" } ?? ""). "
                + "The load generator runs on the same machine (1 event-loop thread).")
        lines.append("")
        lines.append("| Operation | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | / HTTP ceiling | / HSM ceiling |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        if let http = report.httpCeiling { lines.append(row(http)) }
        for operation in report.operations { lines.append(row(operation)) }
        if let mix = report.mix {
            lines.append(
                "| \(mix.name), \(fmt(mix.seconds, 0)) s | \(fmt(mix.requestsPerSecond, 0)) | | | | | \(mix.errors) | \(ratio(mix.ratioToHTTPCeiling)) | |")
            for part in report.mixPerOperation {
                lines.append(row(part, prefix: "&nbsp;&nbsp;mix: ", ratios: false))
            }
        }
        if let createKey = report.createKey { lines.append(row(createKey)) }
        if let moto = report.moto {
            lines.append(row(moto, ratios: false))
        }
        lines.append("")
        if let ratio = report.ratioToMoto {
            lines.append("Trent Encrypt 32 B / moto Encrypt 32 B: **\(fmt(ratio, 1)) x** (\(report.moto?.note ?? "")).")
            lines.append("")
        }
        if !report.hsmCeiling.isEmpty {
            lines.append("HSM ceiling (same token, in-process tight loop, session key, one pooled session per operation):")
            lines.append("")
            lines.append("| PKCS#11 work | 1 thread ops/s | 2 threads ops/s |")
            lines.append("|---|---:|---:|")
            for figure in report.hsmCeiling.values.sorted(by: { $0.name < $1.name }) {
                lines.append("| \(figure.name): \(figure.description) | \(fmt(figure.opsPerSecondOneThread, 0)) | \(fmt(figure.opsPerSecondTwoThreads, 0)) |")
            }
            lines.append("")
        }
        if !report.scale.isEmpty {
            lines.append("Scale with the number of keys (Encrypt 32 B, key chosen at random per request from the working set, after every key was used once):")
            lines.append("")
            lines.append("| Keys | req/s | p50 ms | p99 ms | p99.9 ms | errors | / 1 key | / HTTP ceiling | / HSM ceiling (same key count) | server RSS MiB |")
            lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for scale in report.scale {
                let e = scale.encrypt
                lines.append(
                    "| \(scale.keys) | \(fmt(e.requestsPerSecond, 0)) | \(fmt(e.latency.p50Ms, 2)) | \(fmt(e.latency.p99Ms, 2)) | \(fmt(e.latency.p999Ms, 2)) | \(e.errors) | \(ratio(scale.ratioToOneKey)) | \(ratio(e.ratioToHTTPCeiling)) | \(ratio(e.ratioToHSMCeiling)) | \(scale.serverResidentMiB.map { fmt($0, 0) } ?? "") |")
            }
            lines.append("")
            var facts: [String] = []
            if let empty = report.startupSecondsEmpty { facts.append("startup (spawn to accepting connections) with an empty store \(fmt(empty, 2)) s") }
            if let count = report.scaleKeyCount, let seconds = report.startupSecondsAtScale {
                facts.append("with \(count) keys \(fmt(seconds, 2)) s")
            }
            if let rss = report.serverResidentMiBAfterStart { facts.append("RSS after start \(fmt(rss, 0)) MiB") }
            if let rss = report.serverResidentMiBAtScaleStart { facts.append("RSS after restart at scale \(fmt(rss, 0)) MiB") }
            if let rss = report.serverResidentMiBAtScaleEnd { facts.append("RSS after the scale runs \(fmt(rss, 0)) MiB") }
            if let rate = report.keyCreationDirectPerSecond { facts.append("bulk key creation through provider + store \(fmt(rate, 0)) keys/s") }
            lines.append(facts.joined(separator: "; ") + ".")
            lines.append("")
        }
        if !report.targets.isEmpty {
            lines.append("| Target | Measured | Met |")
            lines.append("|---|---|---|")
            for target in report.targets { lines.append("| \(target.target) | \(target.measured) | \(target.met ? "yes" : "**no**") |") }
            lines.append("")
        }
        let failures = (report.operations + report.mixPerOperation + [report.createKey, report.httpCeiling].compactMap { $0 })
            .filter { $0.errors > 0 }
        for failure in failures {
            lines.append("- \(failure.name): \(failure.errors) errors; first: \(failure.firstError ?? "?")")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func row(_ result: OperationResult, prefix: String = "", ratios: Bool = true) -> String {
        guard result.supported else {
            return "| \(prefix)\(result.name) | \(result.note ?? "not supported") | | | | | | | |"
        }
        let l = result.latency
        return "| \(prefix)\(result.name) | \(fmt(result.requestsPerSecond, 0)) | \(fmt(l.p50Ms, 2)) | \(fmt(l.p90Ms, 2)) | \(fmt(l.p99Ms, 2)) | \(fmt(l.p999Ms, 2)) | \(result.errors) | "
            + "\(ratios ? ratio(result.ratioToHTTPCeiling) : "") | \(ratios ? ratio(result.ratioToHSMCeiling) : "") |"
    }

    static func ratio(_ value: Double?) -> String { value.map { "\(fmt($0 * 100, 0))%" } ?? "" }

    static func fmt(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
}
