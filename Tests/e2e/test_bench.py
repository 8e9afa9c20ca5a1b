"""`trent bench` smoke test: the documented benchmark command runs end to end (its own server, token and store,
the HTTP ceiling server, the HSM ceiling, a small key-count scale test) for about a second per operation and
writes JSON with every field and no failed request. No timing is asserted: CI machines differ."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from trent_e2e import DEFAULT_BIN, TOKEN


def test_bench_runs_and_reports_every_operation_without_errors(tmp_path: Path):
    binary = os.environ.get("TRENT_BIN") or str(DEFAULT_BIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRENT_")}
    env["TRENT_HSM_EMBEDDED_TOKEN"] = TOKEN
    out = tmp_path / "results"
    proc = subprocess.run(
        [binary, "bench", "--duration", "1", "--warmup", "0.2", "--connections", "4", "--mix-duration", "1",
         "--hsm-seconds", "0.2", "--scale-keys", "1,20", "--output", str(out), "--data-dir", str(tmp_path / "data")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"trent bench failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    [run] = list(out.iterdir())
    report = json.loads((run / "results.json").read_text())
    assert (run / "results.md").read_text().startswith("## Trent benchmark")

    names = {row["name"]: row for row in report["operations"]}
    for name in ["Encrypt 32 B", "Encrypt 4 KiB", "Decrypt", "GenerateDataKey AES_256", "GenerateDataKeyWithoutPlaintext",
                 "ReEncrypt", "DescribeKey", "GenerateMac HMAC_SHA_256", "Sign ECDSA P-256", "Sign RSA-2048 PSS"]:
        assert name in names, name
    # Every row runs where the token has the keys: both tested tokens hold RSA and EC (NIST curve) KMS keys.
    assert names["Sign RSA-2048 PSS"]["supported"]
    assert names["Sign ECDSA P-256"]["supported"]
    for row in report["operations"]:
        if not row["supported"]:
            assert "not supported" in row["note"]
            continue
        assert row["errors"] == 0, row
        assert row["requests"] > 0, row
        for field in ["p50Ms", "p90Ms", "p99Ms", "p999Ms"]:
            assert row["latency"][field] > 0, (row["name"], field)
        assert row["ratioToHTTPCeiling"] > 0, row["name"]
    assert names["Encrypt 32 B"]["ratioToHSMCeiling"] > 0

    assert report["httpCeiling"]["requests"] > 0 and report["httpCeiling"]["errors"] == 0
    assert report["hsmCeiling"]["gcm-encrypt-32"]["opsPerSecond"] > 0
    assert report["mix"]["errors"] == 0 and report["mix"]["requests"] > 0
    assert report["createKey"]["errors"] == 0 and report["createKey"]["requests"] > 0
    assert [s["keys"] for s in report["scale"]] == [1, 20]
    assert all(s["encrypt"]["errors"] == 0 and s["encrypt"]["requests"] > 0 for s in report["scale"])
    assert report["startupSecondsAtScale"] > 0 and report["serverResidentMiBAtScaleEnd"] > 0
    assert {t["target"].split(" ")[0] for t in report["targets"]} >= {"Encrypt", "no"}
