"""The deployment files, tested without a container engine: docker/Dockerfile, docker/compose.yaml,
Config/systemd/trent.service (+ trent.env) and scripts/make-dev-certs.sh.

The Dockerfile and compose file are parsed and checked against each other and against the settings `trent` reads
(every TRENT_* they set must be one TrentConfiguration.swift reads); the image's ENTRYPOINT + CMD is run on this
machine with the image's environment, its paths remapped into a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.config import Config

from trent_e2e import ACCESS_KEY_ID, DEFAULT_BIN, REGION, REPO, SECRET_ACCESS_KEY, TOKEN, TrentServer, free_port

DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
UNIT = REPO / "Config" / "systemd" / "trent.service"
UNIT_ENV = REPO / "Config" / "systemd" / "trent.env"
CERTS_SCRIPT = REPO / "scripts" / "make-dev-certs.sh"
SETTINGS_SOURCE = REPO / "Sources" / "trent" / "TrentConfiguration.swift"
def settings_trent_reads() -> set[str]:
    return set(re.findall(r'"(TRENT_[A-Z0-9_]+)"', SETTINGS_SOURCE.read_text()))


# --------------------------------------------------------------------------- the Dockerfile

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    env = {}
    for word, rest in final_stage():
        if word == "ENV":
            for name, value in re.findall(r"([A-Z0-9_]+)=(\S+)", rest):
                env[name] = value
    return env


def only(word: str) -> str:
    values = [rest for w, rest in final_stage() if w == word]
    assert len(values) == 1, f"the final stage has {len(values)} {word} instructions"
    return values[0]


def exec_form(text: str) -> list[str]:
    value = json.loads(text)  # exec form is a JSON array; shell form would not parse
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def healthcheck_command() -> list[str]:
    options, _, command = only("HEALTHCHECK").partition("CMD ")
    assert re.fullmatch(r"(--[a-z-]+=\S+\s*)*", options), options
    return exec_form(command)


def test_the_dockerfile_is_multi_stage_non_root_exec_form_with_the_data_on_a_volume():
    instructions = dockerfile_instructions()
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build") and stages[1] == "debian:bookworm-slim"
    assert any(word == "COPY" and rest.startswith("--from=build ") for word, rest in final_stage())

    user = only("USER")
    assert user.split(":")[0] not in ("root", "0") and user.split(":")[-1] not in ("root", "0")
    assert re.search(rf"useradd .*--uid {user.split(':')[0]} ", DOCKERFILE.read_text())

    entrypoint, command = exec_form(only("ENTRYPOINT")), exec_form(only("CMD"))
    assert entrypoint == ["/usr/local/bin/trent"] and command == ["serve"]
    assert healthcheck_command()[0] == entrypoint[0]
    assert only("STOPSIGNAL") == "SIGTERM"

    env = image_env()
    assert exec_form(only("VOLUME")) == [env["TRENT_DATA_DIR"]]
    assert only("WORKDIR") == env["TRENT_DATA_DIR"]
    assert only("EXPOSE") == env["TRENT_PORT"]
    # It binds every interface, so it must serve TLS from mounted files; the admin listener stays on loopback.
    assert env["TRENT_HOST"] == "0.0.0.0"
    assert env["TRENT_TLS_CERTIFICATE_FILE"].startswith("/etc/trent/tls/") and env["TRENT_TLS_PRIVATE_KEY_FILE"].startswith("/etc/trent/tls/")
    assert env["TRENT_ADMIN_HOST"] == "127.0.0.1"
    assert "TRENT_ALLOW_PLAINTEXT" not in env

    # The runtime stage installs only what trent loads at run time.
    installs = " ".join(rest for word, rest in final_stage() if word == "RUN")
    packages = re.search(r"apt-get install -y -qq --no-install-recommends\s+(.*?)\s+&&", installs).group(1).split()
    assert sorted(packages) == ["ca-certificates", "libnss3", "libp11-kit0", "libsqlite3-0", "softhsm2"]


def test_every_trent_variable_the_deployment_files_set_is_one_trent_reads():
    compose_env = compose()["services"]["trent"].get("environment") or {}
    unit_env = {line.split("=", 1)[0] for line in UNIT_ENV.read_text().splitlines() if line and not line.startswith("#")}
    unit_env |= set(re.findall(r"(TRENT_[A-Z0-9_]+)=", "\n".join(
        line for line in UNIT.read_text().splitlines() if line.startswith("Environment="))))
    commented = set(re.findall(r"#\s*(TRENT_[A-Z0-9_]+)[=:]", DOCKERFILE.read_text() + COMPOSE.read_text() + UNIT_ENV.read_text()))
    names = set(image_env()) | set(compose_env) | unit_env | commented
    assert {n for n in names if n.startswith("TRENT_")} == names
    unknown = names - settings_trent_reads()
    assert unknown == set(), f"set but never read by trent: {sorted(unknown)}"


# --------------------------------------------------------------------------- compose

def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_builds_the_image_and_mounts_its_volume_and_tls_files():
    doc = compose()
    trent = doc["services"]["trent"]
    assert (REPO / "docker" / trent["build"]["context"] / trent["build"]["dockerfile"]).resolve() == DOCKERFILE
    env = image_env()
    volumes = dict(v.split(":", 1) for v in trent["volumes"])
    assert volumes["trent-data"] == env["TRENT_DATA_DIR"] and "trent-data" in doc["volumes"]
    tls_dir = os.path.dirname(env["TRENT_TLS_CERTIFICATE_FILE"])
    assert volumes["./tls"] == f"{tls_dir}:ro" and os.path.dirname(env["TRENT_TLS_PRIVATE_KEY_FILE"]) == tls_dir
    assert trent["ports"] == [f"{env['TRENT_PORT']}:{env['TRENT_PORT']}"]
    assert "postgres:" in COMPOSE.read_text() and "postgres" not in doc["services"], "PostgreSQL stays commented (#15)"
    assert int(trent["stop_grace_period"].rstrip("s")) == unit_settings()["TimeoutStopSec"][0] == 60
    grace = (yaml.safe_load((REPO / "Config" / "trent.yaml").read_text())["server"]).get("shutdownGraceSeconds")
    if grace is not None:
        assert 60 > int(grace) + 5


# --------------------------------------------------------------------------- running the image's command here

@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    proc = subprocess.run([str(CERTS_SCRIPT), str(folder), "trent.internal"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return folder


def image_process(tmp_path: Path, certificates: Path | None) -> tuple[TrentServer, list[str]]:
    """The image's ENTRYPOINT + CMD with the image's ENV, its paths moved under tmp_path and its ports made free."""
    root = tmp_path / "image"
    remap = {"/var/lib/trent": root / "var/lib/trent", "/etc/trent": root / "etc/trent"}
    shutil.copytree(REPO / "Config" / "hsm", remap["/etc/trent"] / "hsm")
    (remap["/etc/trent"] / "tls").mkdir(parents=True)
    if certificates is not None:
        shutil.copy(certificates / "server.pem", remap["/etc/trent"] / "tls" / "server.pem")
        shutil.copy(certificates / "server.key", remap["/etc/trent"] / "tls" / "server.key")
    server = TrentServer(remap["/var/lib/trent"])
    server.env = {k: v for k, v in server.env.items() if not k.startswith("TRENT_")}
    for name, value in image_env().items():
        for prefix, local in remap.items():
            if value == prefix or value.startswith(prefix + "/"):
                value = str(local) + value[len(prefix):]
        server.env[name] = value
    server.env.update(TRENT_PORT=str(server.port), TRENT_HSM_EMBEDDED_TOKEN=TOKEN,
                      TRENT_ACCESS_KEY_ID=ACCESS_KEY_ID, TRENT_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY)
    if "TRENT_ADMIN_PORT" in server.env:
        server.env["TRENT_ADMIN_PORT"] = str(free_port(other_than=server.port))
    command = [str(server.binary) if part == "/usr/local/bin/trent" else part
               for part in exec_form(only("ENTRYPOINT")) + exec_form(only("CMD"))]
    assert command[1:] == ["serve"]
    return server, command


def test_the_image_command_serves_the_api_over_tls_with_the_image_environment(tmp_path, certificates):
    server, _ = image_process(tmp_path, certificates)
    server.start()
    try:
        kms = boto3.session.Session().client(
            "kms", region_name=REGION, endpoint_url=f"https://localhost:{server.port}", verify=str(certificates / "ca.pem"),
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(retries={"total_max_attempts": 1}))
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"from the image")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from the image"
        # The HEALTHCHECK, run as Docker would inside the container.
        health = [str(server.binary)] + healthcheck_command()[1:]
        proc = subprocess.run(health, env=server.env, cwd=server.data_dir, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    finally:
        server.stop()


def test_the_image_command_without_its_tls_files_refuses_to_start_with_one_line(tmp_path):
    server, command = image_process(tmp_path, None)
    proc = subprocess.run(command, env=server.env, cwd=server.data_dir, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trent: ") and server.env["TRENT_TLS_CERTIFICATE_FILE"] in lines[0], lines


def test_the_image_layout_serves_with_the_image_environment_on_loopback(tmp_path):
    """The entrypoint, CMD, data folder and profile folder of the image alone: the listener moved to loopback,
    where plain HTTP is allowed, and no TLS files."""
    server, _ = image_process(tmp_path, None)
    for name in ("TRENT_TLS_CERTIFICATE_FILE", "TRENT_TLS_PRIVATE_KEY_FILE"):
        server.env.pop(name)
    server.env["TRENT_HOST"] = "127.0.0.1"
    server.start()
    try:
        kms = boto3.session.Session().client(
            "kms", region_name=REGION, endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY, config=Config(retries={"total_max_attempts": 1}))
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Enabled"] is True
        data = Path(server.env["TRENT_DATA_DIR"])
        assert (data / "trent.sqlite").is_file() and (data / "audit" / "records.jsonl").is_file()
    finally:
        server.stop()


def test_the_healthcheck_names_a_subcommand_trent_lists():
    """The HEALTHCHECK runs `trent healthcheck`, which the metrics part of #13 adds."""
    command = healthcheck_command()
    help_text = subprocess.run([str(os.environ.get("TRENT_BIN") or DEFAULT_BIN), "--help"],
                               capture_output=True, text=True, timeout=30).stdout
    subcommands = re.findall(r"^ {2}([a-z][a-z-]*)\b", help_text.split("SUBCOMMANDS:")[-1], re.MULTILINE)
    assert command[1] in subcommands, f"trent --help lists {subcommands}"


# --------------------------------------------------------------------------- systemd

def unit_settings() -> dict[str, list]:
    settings: dict[str, list] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            name, value = line.split("=", 1)
            settings.setdefault(name, []).append(int(value) if value.isdigit() else value)
    return settings


def test_the_systemd_unit_is_hardened_and_verifies():
    unit = unit_settings()
    expected = {
        "Type": ["exec"], "User": ["trent"], "ExecStart": ["/usr/local/bin/trent serve"], "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "KillSignal": ["SIGTERM"], "ProtectSystem": ["strict"], "ProtectHome": ["yes"], "NoNewPrivileges": ["yes"],
        "PrivateTmp": ["yes"], "PrivateDevices": ["yes"], "ReadWritePaths": ["/var/lib/trent"], "CapabilityBoundingSet": [""],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"], "SystemCallFilter": ["@system-service"],
        "StateDirectory": ["trent"], "EnvironmentFile": ["/etc/trent/trent.env"],
    }
    assert {name: unit.get(name) for name in expected} == expected
    assert "TRENT_DATA_DIR=/var/lib/trent" in unit["Environment"][0].split()
    config = yaml.safe_load((REPO / "Config" / "trent.yaml").read_text())["server"]
    assert unit["LimitNOFILE"][0] >= config["maxConnections"] + 256
    if "shutdownGraceSeconds" in config:
        assert unit["TimeoutStopSec"][0] > config["shutdownGraceSeconds"] + 5
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (Debian package systemd): the unit is checked only by the assertions above")
    # verify checks that ExecStart exists: point it at the binary built here.
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"trent-unit-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    copy = folder / "trent.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/trent", str(os.environ.get("TRENT_BIN") or DEFAULT_BIN)))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    shutil.rmtree(folder)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


# --------------------------------------------------------------------------- development certificates

def test_make_dev_certs_makes_a_ca_a_server_and_a_client_certificate_that_verify(certificates):
    names = sorted(p.name for p in certificates.iterdir())
    assert names == ["ca.key", "ca.pem", "client.key", "client.pem", "server.key", "server.pem"]
    for key in ("ca.key", "client.key", "server.key"):
        assert (certificates / key).stat().st_mode & 0o777 == 0o600
    proc = subprocess.run(["openssl", "verify", "-CAfile", "ca.pem", "server.pem", "client.pem"],
                          cwd=certificates, capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "server.pem: OK\nclient.pem: OK\n"), proc.stderr
    server = subprocess.run(["openssl", "x509", "-in", "server.pem", "-noout", "-ext", "subjectAltName,extendedKeyUsage"],
                            cwd=certificates, capture_output=True, text=True, timeout=30).stdout
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:trent.internal" in server
    assert "TLS Web Server Authentication" in server
    client = subprocess.run(["openssl", "x509", "-in", "client.pem", "-noout", "-ext", "extendedKeyUsage"],
                            cwd=certificates, capture_output=True, text=True, timeout=30).stdout
    assert "TLS Web Client Authentication" in client
    # The key matches the leaf (the first certificate of server.pem).
    pub = lambda *args: subprocess.run(["openssl", *args], cwd=certificates, capture_output=True, timeout=30).stdout  # noqa: E731
    assert pub("pkey", "-in", "server.key", "-pubout") == pub("x509", "-in", "server.pem", "-noout", "-pubkey")
    refused = subprocess.run([str(CERTS_SCRIPT), str(certificates), "bad name"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "NAME must be a DNS name" in refused.stderr
