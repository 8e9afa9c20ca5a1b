"""HTTPS on the API listener (issue #13): the AWS CLI and boto3 over real TLS, mutual TLS, TLS 1.2 as the floor,
SIGHUP reloading the certificate without dropping connections, and the startup checks (plain HTTP off loopback,
missing or broken certificate files).

Every certificate is made here with `cryptography`: a CA, server certificates for 127.0.0.1 and localhost, client
certificates, and a second CA nobody trusts.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, SSLError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trent_e2e import (ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, TrentServer, expect_error, free_port, make_kms,
                       remember_plaintext)

CA_SERIAL, FIRST_SERIAL, SECOND_SERIAL = 0x7E57CA, 0x1001, 0x2002


# --------------------------------------------------------------------------- certificates

class Authority:
    """A CA that issues server and client certificates into `folder`."""

    def __init__(self, folder: Path, name: str):
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(CA_SERIAL).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        self.bundle = folder / f"{name}-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, serial: int, *, client: bool = False) -> tuple[Path, Path]:
        """(certificate file, key file): a server certificate for 127.0.0.1 and localhost, or a client one."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        if not client:
            import ipaddress
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        # The chain, leaf first (the CA is the root: sending it too is allowed and harmless).
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        return cert_file, key_file


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls-pki")
    ca = Authority(folder, "trent-test")
    return {
        "folder": folder,
        "ca": ca,
        "server": ca.issue("server", FIRST_SERIAL),
        "client": ca.issue("client", 0x3003, client=True),
        "stranger": Authority(folder, "stranger").issue("stranger-client", 0x4004, client=True),
    }


def tls_server(folder: Path, pki, *, mutual: bool = False) -> TrentServer:
    server = TrentServer(folder)
    cert, key = pki["server"]
    server.use_tls(cert, key, pki["ca"].bundle, client_ca_file=pki["ca"].bundle if mutual else None)
    return server


@pytest.fixture(scope="module")
def https_server(tmp_path_factory, pki):
    server = tls_server(tmp_path_factory.mktemp("trent-https"), pki)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    server = tls_server(tmp_path_factory.mktemp("trent-mtls"), pki, mutual=True)
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- raw TLS clients

def client_context(ca: Path | None, *, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def signed_list_keys(server: TrentServer) -> tuple[bytes, dict[str, str]]:
    """A SigV4-signed ListKeys: its body and headers (Host included), for a hand-driven HTTPS connection."""
    body = b"{}"
    request = AWSRequest(method="POST", url=f"{server.endpoint}/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"})
    SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "kms", REGION).add_auth(request)
    return body, dict(request.headers.items())


def list_keys_on(server: TrentServer, connection: http.client.HTTPSConnection) -> int:
    body, headers = signed_list_keys(server)
    connection.request("POST", "/", body=body, headers=headers)
    response = connection.getresponse()
    payload = json.loads(response.read())
    assert "Keys" in payload, payload
    return response.status


def served_serial(server: TrentServer) -> int:
    """The serial number of the certificate a new connection is shown."""
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        with client_context(Path(server.ca_bundle)).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def handshake(server: TrentServer, context: ssl.SSLContext) -> str:
    """Handshakes, sends a signed ListKeys and reads the status line; returns the TLS version used. In TLS 1.3 a
    server refuses a client certificate after the client's side of the handshake is done, so the refusal shows
    at the first read."""
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            body, headers = signed_list_keys(server)
            head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            tls.sendall(f"POST / HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body)
            status = tls.recv(64)
            assert status.startswith(b"HTTP/1.1 200"), status
            return tls.version()


# --------------------------------------------------------------------------- HTTPS with the SDKs

def test_boto3_over_https_with_verify(https_server):
    kms = make_kms(https_server)
    assert https_server.endpoint.startswith("https://")
    key_id = kms.create_key(Description="over TLS")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"tls plaintext", EncryptionContext={"via": "https"})["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"via": "https"})["Plaintext"] == b"tls plaintext"
    # The caller's source IP survives the TLS layer: the audit record names it.
    records = [json.loads(line)["record"] for line in
               (https_server.data_dir / "audit" / "records.jsonl").read_text().splitlines()]
    encrypt = next(record for record in reversed(records) if record["eventName"] == "Encrypt")
    assert encrypt["sourceIPAddress"] == "127.0.0.1", encrypt
    assert "Trent is serving the AWS KMS API at " + https_server.endpoint in https_server.log_text()


def test_aws_cli_over_https_with_ca_bundle(https_server, tmp_path):
    exe = os.environ.get("AWS_CLI") or shutil.which("aws")
    assert exe, "the AWS CLI is not installed; pip install -r Tests/e2e/requirements.txt"
    (tmp_path / "config").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY, AWS_PAGER="",
               AWS_CONFIG_FILE=str(tmp_path / "config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "config"),
               AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1")

    def aws(*args: str, ca_bundle: bool = True) -> subprocess.CompletedProcess:
        cmd = [exe, "kms", *args, "--endpoint-url", https_server.endpoint, "--region", REGION, "--output", "json"]
        if ca_bundle:
            cmd += ["--ca-bundle", https_server.ca_bundle]
        return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    created = aws("create-key", "--description", "cli over tls")
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["KeyMetadata"]["KeyId"]
    plaintext = b"cli tls secret"
    remember_plaintext(plaintext)
    (tmp_path / "plaintext.bin").write_bytes(plaintext)
    encrypted = aws("encrypt", "--key-id", key_id, "--plaintext", f"fileb://{tmp_path / 'plaintext.bin'}")
    assert encrypted.returncode == 0, encrypted.stderr
    (tmp_path / "ciphertext.bin").write_bytes(base64.b64decode(json.loads(encrypted.stdout)["CiphertextBlob"]))
    decrypted = aws("decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'ciphertext.bin'}")
    assert decrypted.returncode == 0, decrypted.stderr
    assert base64.b64decode(json.loads(decrypted.stdout)["Plaintext"]) == plaintext
    # Without the bundle the CLI does not trust Trent's CA.
    refused = aws("list-keys", ca_bundle=False)
    assert refused.returncode == 255, refused
    assert "SSL validation failed" in refused.stderr and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr


def test_a_client_that_does_not_trust_the_ca_is_refused(https_server, tmp_path):
    (tmp_path / "empty.pem").write_text("")
    kms = make_kms(https_server, verify=True)  # the system's CAs, which never signed Trent's certificate
    with pytest.raises(SSLError) as excinfo:
        kms.list_keys()
    assert "CERTIFICATE_VERIFY_FAILED" in str(excinfo.value), excinfo.value


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_2_and_1_3_are_served_and_1_1_is_refused(https_server):
    ca = Path(https_server.ca_bundle)
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        context = client_context(ca)
        context.minimum_version = context.maximum_version = version
        assert handshake(https_server, context) == name
    old = client_context(ca)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client offers TLS 1.1 at all
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as excinfo:
        handshake(https_server, old)
    assert "TLSV1_ALERT_PROTOCOL_VERSION" in str(excinfo.value), excinfo.value  # the server's alert


def test_plain_http_to_the_https_port_gets_no_answer(https_server):
    with socket.create_connection((https_server.host, https_server.port), timeout=5) as raw:
        raw.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
        raw.settimeout(5)
        answer = b""
        try:
            while chunk := raw.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1" not in answer, answer


def closed_after(sock, timeout: float = 10.0) -> float:
    """Seconds until the server closes `sock` (reads and drops whatever arrives first)."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    return time.monotonic() - started


def test_connection_limits_hold_under_tls(tmp_path, pki):
    """The connection count, the read deadline (which, starting at a connection's first byte, bounds the handshake
    too), the idle timeout and the header limits, over HTTPS."""
    server = tls_server(tmp_path / "data", pki)
    server.env.update(TRENT_MAX_CONNECTIONS="2", TRENT_READ_TIMEOUT_SECONDS="1", TRENT_IDLE_TIMEOUT_SECONDS="3",
                      TRENT_MAX_HEADER_FIELDS="20")
    server.start()
    context = client_context(Path(server.ca_bundle))
    try:
        # Two connections open: a third is closed at once, and the two go on working.
        first = http.client.HTTPSConnection(server.host, server.port, timeout=10, context=context)
        second = http.client.HTTPSConnection(server.host, server.port, timeout=10, context=context)
        assert list_keys_on(server, first) == 200 and list_keys_on(server, second) == 200
        with socket.create_connection((server.host, server.port), timeout=5) as third:
            assert closed_after(third) < 1
        assert list_keys_on(server, first) == 200 and list_keys_on(server, second) == 200
        first.close()
        second.close()
        # A closed TLS connection keeps its slot until the close_notify exchange ends (at most 1 s).
        time.sleep(1.2)
        # A client that starts a handshake and stalls is closed at the read deadline, not left to the idle timeout.
        with socket.create_connection((server.host, server.port), timeout=5) as stalled:
            stalled.sendall(b"\x16\x03\x01\x00\xc8\x01")  # the first bytes of a ClientHello
            assert 0.5 < closed_after(stalled) < 3
        # A handshaken client that sends half a request: the read deadline.
        with context.wrap_socket(socket.create_connection((server.host, server.port), timeout=5),
                                 server_hostname="127.0.0.1") as half:
            half.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert 0.5 < closed_after(half) < 3
        # The deadline runs from the handshake's first byte: a client that handshakes and sends no request is closed
        # at it too.
        with context.wrap_socket(socket.create_connection((server.host, server.port), timeout=5),
                                 server_hostname="127.0.0.1") as silent:
            assert 0.5 < closed_after(silent) < 3
        # A keep-alive connection after its request: the idle timeout.
        idle = http.client.HTTPSConnection(server.host, server.port, timeout=10, context=context)
        assert list_keys_on(server, idle) == 200
        assert 2.5 < closed_after(idle.sock) < 5.5
        idle.close()
        # Too many header fields: 400, as over plain HTTP.
        with context.wrap_socket(socket.create_connection((server.host, server.port), timeout=5),
                                 server_hostname="127.0.0.1") as fields:
            many = "".join(f"X-Field-{i}: {i}\r\n" for i in range(40))
            fields.sendall(f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}Content-Length: 2\r\n\r\n{{}}".encode())
            fields.settimeout(5)
            assert fields.recv(64).startswith(b"HTTP/1.1 400")
    finally:
        assert server.stop() == 0


# --------------------------------------------------------------------------- mutual TLS

def test_mutual_tls_client_with_a_certificate_is_accepted(mtls_server, pki):
    kms = make_kms(mtls_server, client_cert=tuple(str(p) for p in pki["client"]))
    key_id = kms.create_key(Description="over mutual TLS")["KeyMetadata"]["KeyId"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"] == key_id
    # The certificate authenticates the connection only: SigV4 still decides who calls.
    wrong_secret = make_kms(mtls_server, client_cert=tuple(str(p) for p in pki["client"]),
                            secret_access_key="not-the-secret-0123456789abcdefghijklmn")
    with expect_error("InvalidSignatureException"):
        wrong_secret.list_keys()


def test_mutual_tls_client_without_a_certificate_is_refused(mtls_server):
    kms = make_kms(mtls_server, retries={"total_max_attempts": 1})
    with pytest.raises((SSLError, ClientError)) as excinfo:
        kms.list_keys()
    # botocore's SSLError: urllib3 sees the alert, or (when its request write races the alert) the close after it.
    assert isinstance(excinfo.value, SSLError), excinfo.value
    assert any(text in str(excinfo.value) for text in ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "EOF occurred in violation of protocol")), excinfo.value
    # The same, by hand: the handshake ends in the alert "certificate required".
    with pytest.raises(ssl.SSLError) as raw:
        handshake(mtls_server, client_context(Path(mtls_server.ca_bundle)))
    assert "TLSV13_ALERT_CERTIFICATE_REQUIRED" in str(raw.value), raw.value


def test_mutual_tls_client_with_an_untrusted_certificate_is_refused(mtls_server, pki):
    with pytest.raises(ssl.SSLError) as raw:
        handshake(mtls_server, client_context(Path(mtls_server.ca_bundle), cert=pki["stranger"]))
    assert "TLSV1_ALERT_UNKNOWN_CA" in str(raw.value), raw.value
    assert handshake(mtls_server, client_context(Path(mtls_server.ca_bundle), cert=pki["client"])) == "TLSv1.3"


# --------------------------------------------------------------------------- SIGHUP

def wait_for_log(server: TrentServer, text: str, after: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tail = server.log_bytes()[after:].decode(errors="replace")
        if text in tail:
            return next(line for line in tail.splitlines() if text in line)
        time.sleep(0.05)
    pytest.fail(f"no {text!r} in the log within {timeout}s:\n{server.log_bytes()[after:].decode(errors='replace')}")


def test_sighup_reloads_the_certificate_without_dropping_connections(tmp_path, pki):
    served_cert, served_key = tmp_path / "served.pem", tmp_path / "served.key"
    shutil.copy(pki["server"][0], served_cert)
    shutil.copy(pki["server"][1], served_key)
    server = TrentServer(tmp_path / "data")
    server.use_tls(served_cert, served_key, pki["ca"].bundle)
    server.start()
    try:
        assert served_serial(server) == FIRST_SERIAL
        kept = http.client.HTTPSConnection(server.host, server.port, timeout=10, context=client_context(pki["ca"].bundle))
        assert list_keys_on(server, kept) == 200
        kept_socket = kept.sock

        # A new pair: new connections get it, the open one goes on with the old session.
        new_cert, new_key = pki["ca"].issue("server-renewed", SECOND_SERIAL)
        shutil.copy(new_cert, served_cert)
        shutil.copy(new_key, served_key)
        offset = len(server.log_bytes())
        server.proc.send_signal(signal.SIGHUP)
        line = wait_for_log(server, "reloaded the TLS certificate", offset)
        assert f"{SECOND_SERIAL:x}" in line, line
        assert served_serial(server) == SECOND_SERIAL
        assert list_keys_on(server, kept) == 200
        assert kept.sock is kept_socket, "the keep-alive connection was dropped by the reload"
        peer = x509.load_der_x509_certificate(kept.sock.getpeercert(binary_form=True))
        assert peer.serial_number == FIRST_SERIAL

        # A broken file, then a key of another certificate: each refused with one line, the renewed pair stays.
        for broken, why in (
            (lambda: served_cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
             f"server.tls.certificateFile {served_cert} "),
            (lambda: (shutil.copy(new_cert, served_cert), shutil.copy(pki["server"][1], served_key)),
             f"server.tls.privateKeyFile {served_key} is not the private key of the first certificate in {served_cert}"),
        ):
            broken()
            offset = len(server.log_bytes())
            server.proc.send_signal(signal.SIGHUP)
            line = wait_for_log(server, "TLS certificate reload refused", offset)
            assert why in line and "still serving the previous certificate" in line, line
            assert served_serial(server) == SECOND_SERIAL
            assert list_keys_on(server, kept) == 200
        kept.close()
    finally:
        assert server.stop() == 0


def test_sighup_without_tls_is_ignored(make_server):
    server = make_server()
    offset = len(server.log_bytes())
    server.proc.send_signal(signal.SIGHUP)
    wait_for_log(server, "SIGHUP: TLS is off, nothing to reload", offset)
    assert make_kms(server).list_keys()["Keys"] is not None
    assert server.proc.poll() is None


# --------------------------------------------------------------------------- startup checks

def serve(tmp_path: Path, timeout: float = 60, **env) -> subprocess.CompletedProcess:
    """`trent serve` that must fail: its exit status and stderr."""
    server = TrentServer(tmp_path / "data")
    server.env.update(env)
    return subprocess.run([str(server.binary), "serve"], cwd=server.data_dir, env=server.env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line(result: subprocess.CompletedProcess, line: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [f"trent: {line}"], result.stderr


def test_plain_http_on_a_non_loopback_address_is_refused(tmp_path):
    assert_one_line(
        serve(tmp_path, TRENT_HOST="0.0.0.0"),
        "server.host 0.0.0.0 is not a loopback address and TLS is off: set server.tls.certificateFile and "
        "server.tls.privateKeyFile, or server.allowPlaintext: true (TRENT_ALLOW_PLAINTEXT) if a proxy terminates "
        "TLS in front of Trent")


def test_plain_http_on_a_non_loopback_address_starts_when_allowed(tmp_path):
    server = TrentServer(tmp_path / "data")
    server.env.update(TRENT_HOST="0.0.0.0", TRENT_ALLOW_PLAINTEXT="true")
    server.start()
    try:
        assert make_kms(server).list_keys()["Keys"] is not None
        assert f"Trent is serving the AWS KMS API at http://0.0.0.0:{server.port}" in server.log_text()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_addresses_need_no_tls(tmp_path, host):
    """The loopback check only: a TRENT_PORT of 0 is refused after it, so nothing binds."""
    assert_one_line(serve(tmp_path, TRENT_HOST=host, TRENT_PORT="0"), "server.port must be 1 to 65535, not 0")


def test_missing_and_broken_certificate_files_stop_startup(tmp_path, pki):
    cert, key = pki["server"]
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    other_key = pki["client"][1]
    cases = [
        ({"TRENT_TLS_CERTIFICATE_FILE": str(missing), "TRENT_TLS_PRIVATE_KEY_FILE": str(key)},
         f"server.tls.certificateFile {missing} does not exist"),
        ({"TRENT_TLS_CERTIFICATE_FILE": str(cert), "TRENT_TLS_PRIVATE_KEY_FILE": str(missing)},
         f"server.tls.privateKeyFile {missing} does not exist"),
        ({"TRENT_TLS_CERTIFICATE_FILE": str(garbage), "TRENT_TLS_PRIVATE_KEY_FILE": str(key)},
         f"server.tls.certificateFile {garbage} is not a PEM certificate chain"),
        ({"TRENT_TLS_CERTIFICATE_FILE": str(cert), "TRENT_TLS_PRIVATE_KEY_FILE": str(garbage)},
         f"server.tls.privateKeyFile {garbage} is not an unencrypted PEM private key"),
        ({"TRENT_TLS_CERTIFICATE_FILE": str(cert), "TRENT_TLS_PRIVATE_KEY_FILE": str(other_key)},
         f"server.tls.privateKeyFile {other_key} is not the private key of the first certificate in {cert}"),
        ({"TRENT_TLS_CERTIFICATE_FILE": str(cert)},
         "server.tls.certificateFile and server.tls.privateKeyFile must be set together"),
        ({"TRENT_TLS_CLIENT_CA_FILE": str(pki["ca"].bundle)},
         "server.tls.clientCAFile needs server.tls.certificateFile and server.tls.privateKeyFile (mutual TLS is TLS)"),
        ({"TRENT_TLS_CERTIFICATE_FILE": str(cert), "TRENT_TLS_PRIVATE_KEY_FILE": str(key),
          "TRENT_TLS_CLIENT_CA_FILE": str(garbage)},
         f"server.tls.clientCAFile {garbage} holds no PEM certificate"),
    ]
    for env, line in cases:
        started = time.monotonic()
        assert_one_line(serve(tmp_path, **env), line)
        assert time.monotonic() - started < 10
