"""Limits at the connection (`server:` in Config/trent.yaml), against the real server over raw sockets.

Header size and count, the body size, the request read timeout (slowloris), the idle keep-alive timeout, the
number of connections open at once, and broken HTTP framing. Whatever a client sends, the answer is a 4xx or a
closed connection, never a 5xx, and the server goes on serving. Each test starts its own server, so the limits
under test are set small through the TRENT_* variables and the timing of one test cannot disturb another.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from trent_e2e import ACCESS_KEY_ID, JSON_11, REGION, SECRET_ACCESS_KEY, TrentServer

# The small limits most tests run with: a read timeout well below the idle timeout, so that a test can tell
# which of the two closed a connection.
READ_TIMEOUT = 2
IDLE_TIMEOUT = 4
MAX_CONNECTIONS = 8
SMALL_LIMITS = {
    "TRENT_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
    "TRENT_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
    "TRENT_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}
# How late a close may come after its bound (scheduling, a loaded machine), and how early.
SLACK = 2.0
EARLY = 0.5

# The built-in defaults, as Config/trent.yaml documents them.
DEFAULT_HEADER_BYTES = 16 * 1024
DEFAULT_HEADER_FIELDS = 100
DEFAULT_BODY_BYTES = 1024 * 1024


# --------------------------------------------------------------------------- servers

@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """A server with the built-in limits, for the size limits and framing (nothing here waits on a timeout)."""
    srv = TrentServer(tmp_path_factory.mktemp("trent-limits-default"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def limited(make_server):
    """A fresh server with SMALL_LIMITS plus any overrides: limited(TRENT_MAX_BODY_BYTES="100")."""

    def factory(**env: str) -> TrentServer:
        srv = make_server(start=False)
        srv.env.update(SMALL_LIMITS, **env)
        srv.start()
        return srv

    return factory


# --------------------------------------------------------------------------- raw HTTP

def request_bytes(server: TrentServer, body: bytes = b"{}", *, target: str = "ListKeys", sign: bool = True,
                  extra: list[tuple[str, str]] | None = None, path: str = "/", framing: str | None = None) -> bytes:
    """One POST as bytes. Signed with botocore (host, date, target, body), then `extra` headers are added
    unsigned, which SigV4 allows. `framing` replaces the Content-Length line (e.g. a Transfer-Encoding)."""
    headers = {"Content-Type": JSON_11, "X-Amz-Target": f"TrentService.{target}"}
    if sign:
        request = AWSRequest(method="POST", url=server.endpoint + "/", data=body, headers=headers)
        SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "kms", REGION).add_auth(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    lines = [f"POST {path} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(framing if framing is not None else f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body if framing is None else b"")


def connect(server: TrentServer, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def send(sock: socket.socket, data: bytes) -> bool:
    """False when the server closed the connection before taking it all (it may stop reading at a limit)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers  # lowercase names
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def error(self) -> str | None:
        return self.json.get("__type") if isinstance(self.json, dict) else None

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers}, {self.body[:300]!r})"


def parse_responses(data: bytes) -> tuple[list[Response], bytes]:
    """Complete responses in `data` (Trent always sends Content-Length), and the bytes left over."""
    responses = []
    while b"\r\n\r\n" in data:
        head, rest = data.split(b"\r\n\r\n", 1)
        status_line, *fields = head.decode("latin-1").split("\r\n")
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            break
        responses.append(Response(int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return responses, data


def read_until_closed(sock: socket.socket, timeout: float = 10) -> tuple[list[Response], bool, float]:
    """Reads until the server closes the connection or `timeout` passes: (responses, closed, seconds waited)."""
    start = time.monotonic()
    data = b""
    closed = False
    sock.settimeout(0.1)
    while time.monotonic() - start < timeout:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    responses, rest = parse_responses(data)
    assert not rest, f"a partial response before the close: {rest[:300]!r}"
    return responses, closed, time.monotonic() - start


def next_response(sock: socket.socket, timeout: float = 10) -> Response | None:
    """One response on a connection that stays open; None when the server closes it instead of answering."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            assert not data, f"the server closed the connection within a response: {data[:300]!r}"
            return None
        data += chunk
        responses, rest = parse_responses(data)
        if responses:
            assert len(responses) == 1 and not rest, f"more than one response: {data[:600]!r}"
            return responses[0]
    pytest.fail(f"no response within {timeout}s")


def read_response(sock: socket.socket, timeout: float = 10) -> Response:
    response = next_response(sock, timeout)
    assert response is not None, "the server closed the connection instead of answering"
    return response


def exchange(server: TrentServer, data: bytes, *, half_close: bool = False, timeout: float = 10):
    """Sends `data` on a new connection and reads until the server closes it: (responses, closed)."""
    with connect(server) as sock:
        sent = send(sock, data)
        if half_close and sent:
            sock.shutdown(socket.SHUT_WR)
        responses, closed, _ = read_until_closed(sock, timeout)
    return responses, closed


def assert_refused(responses: list[Response], closed: bool, what: str, statuses=(400, 413, 431)) -> None:
    """At most one answer, a 4xx (never a 5xx nor KMSInternalException), and the connection closed after it."""
    assert closed, f"{what}: the connection stayed open"
    assert len(responses) <= 1, f"{what}: more than one response: {responses}"
    for response in responses:
        assert response.status in statuses, f"{what}: {response}"
        assert response.error != "KMSInternalException", f"{what}: {response}"


def assert_serving(server: TrentServer) -> None:
    """The process is alive and a signed request on a fresh connection succeeds."""
    assert server.proc is not None and server.proc.poll() is None, f"trent exited:\n{server._log_tail()}"
    with connect(server) as sock:
        assert send(sock, request_bytes(server))
        response = read_response(sock)
    assert response.status == 200, response
    assert "Keys" in response.json, response


def padding(count: int, value_size: int = 8) -> list[tuple[str, str]]:
    return [(f"X-Pad-{i:05d}", "v" * value_size) for i in range(count)]


def header_fields(data: bytes) -> int:
    return data.split(b"\r\n\r\n", 1)[0].count(b"\r\n")


def header_bytes(data: bytes) -> int:
    """What NIO counts against maxHeaderBytes: the request target plus every header name and value."""
    request_line, *fields = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    target = request_line.split(b" ")[1]
    return len(target) + sum(len(name) + len(value.strip()) for name, _, value in (f.partition(b":") for f in fields))


# --------------------------------------------------------------------------- header size and count

def test_headers_up_to_the_default_limits_are_served(default_server):
    base = request_bytes(default_server)
    fields = padding(DEFAULT_HEADER_FIELDS - header_fields(base))
    data = request_bytes(default_server, extra=fields)
    assert header_fields(data) == DEFAULT_HEADER_FIELDS
    with connect(default_server) as sock:
        assert send(sock, data)
        response = read_response(sock)
    assert response.status == 200, response

    # Close to the byte limit, in few fields.
    room = DEFAULT_HEADER_BYTES - header_bytes(request_bytes(default_server, extra=[("X-Big", "")]))
    data = request_bytes(default_server, extra=[("X-Big", "b" * (room - 64))])
    assert DEFAULT_HEADER_BYTES - 100 < header_bytes(data) <= DEFAULT_HEADER_BYTES
    with connect(default_server) as sock:
        assert send(sock, data)
        response = read_response(sock)
    assert response.status == 200, response


@pytest.mark.parametrize("count", [DEFAULT_HEADER_FIELDS + 1, 10_000])
def test_too_many_header_fields_are_refused(default_server, count):
    base = request_bytes(default_server)
    data = request_bytes(default_server, extra=padding(count - header_fields(base), value_size=1))
    assert header_fields(data) == count
    responses, closed = exchange(default_server, data)
    assert_refused(responses, closed, f"{count} header fields")
    assert_serving(default_server)


@pytest.mark.parametrize(
    "shape",
    ["one large field", "many fields", "long request target", "one 1 MiB field"],
)
def test_headers_over_the_byte_limit_are_refused(default_server, shape):
    over = DEFAULT_HEADER_BYTES + 1
    if shape == "one large field":
        data = request_bytes(default_server, extra=[("X-Big", "b" * over)])
    elif shape == "many fields":
        data = request_bytes(default_server, extra=padding(20, value_size=over // 20))
        assert header_fields(data) < DEFAULT_HEADER_FIELDS
    elif shape == "long request target":
        data = request_bytes(default_server, path="/?" + "q" * over)
    else:
        data = request_bytes(default_server, extra=[("X-Huge", "h" * (1 << 20))])
    assert header_bytes(data) > DEFAULT_HEADER_BYTES
    responses, closed = exchange(default_server, data)
    assert_refused(responses, closed, shape)
    assert_serving(default_server)


def test_header_limits_are_configurable(limited):
    srv = limited(TRENT_MAX_HEADER_FIELDS="20", TRENT_MAX_HEADER_BYTES="2048")
    assert_serving(srv)
    base = request_bytes(srv)
    responses, closed = exchange(srv, request_bytes(srv, extra=padding(21 - header_fields(base))))
    assert_refused(responses, closed, "21 header fields with a limit of 20")
    assert responses and responses[0].status == 400, responses
    responses, closed = exchange(srv, request_bytes(srv, extra=[("X-Big", "b" * 2048)]))
    assert_refused(responses, closed, "2 KiB of headers with a limit of 2048 bytes")
    assert responses and responses[0].status == 400, responses
    assert_serving(srv)


# --------------------------------------------------------------------------- body size

def body_answer(server: TrentServer, size: int, chunked: bool = False) -> Response:
    """The answer to an unsigned request with a `size`-byte body: the size is checked before authentication."""
    body = b"x" * size
    if chunked:
        data = request_bytes(server, sign=False, framing="Transfer-Encoding: chunked") + b"%x\r\n%s\r\n0\r\n\r\n" % (size, body)
    else:
        data = request_bytes(server, body, sign=False)
    with connect(server, timeout=30) as sock:
        assert send(sock, data), "the server closed the connection instead of answering"
        return read_response(sock, timeout=30)


def assert_too_large(response: Response, limit: int) -> None:
    assert response.status == 413, response
    assert response.error == "ValidationException", response
    assert str(limit) in response.json.get("message", ""), response
    assert response.headers.get("x-amzn-requestid"), response


def test_body_limit_default_is_1_mib(default_server):
    at_limit = body_answer(default_server, DEFAULT_BODY_BYTES)
    assert at_limit.status == 400 and at_limit.error == "MissingAuthenticationTokenException", at_limit
    assert_too_large(body_answer(default_server, DEFAULT_BODY_BYTES + 1), DEFAULT_BODY_BYTES)
    assert_too_large(body_answer(default_server, DEFAULT_BODY_BYTES + 1, chunked=True), DEFAULT_BODY_BYTES)
    assert_serving(default_server)


def test_body_limit_is_configurable(limited):
    srv = limited(TRENT_MAX_BODY_BYTES="4096")
    at_limit = body_answer(srv, 4096)
    assert at_limit.status == 400 and at_limit.error == "MissingAuthenticationTokenException", at_limit
    assert_too_large(body_answer(srv, 4097), 4096)
    assert_too_large(body_answer(srv, 4097, chunked=True), 4096)
    # A signed request whose body is within the limit is served.
    assert_serving(srv)


# --------------------------------------------------------------------------- request read timeout (slowloris)

def trickle(server: TrentServer, first: bytes, rest: bytes, interval: float = 1.0, give_up: float = 20):
    """Sends `first`, then `rest` one byte per `interval`, until the server closes the connection.
    Returns (seconds from the first byte to the close, responses received)."""
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(first)
        data = b""
        sock.settimeout(0.05)
        for byte in rest:
            next_byte = time.monotonic() + interval
            while time.monotonic() < next_byte:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return time.monotonic() - start, parse_responses(data)[0]
                data += chunk
            if time.monotonic() - start > give_up or not send(sock, bytes([byte])):
                break
        pytest.fail(f"the server kept a trickling connection open for {time.monotonic() - start:.1f}s")


def test_slowloris_headers_are_cut_at_the_read_timeout(limited):
    srv = limited()
    request = request_bytes(srv)
    elapsed, responses = trickle(srv, request[:1], request[1:])
    assert READ_TIMEOUT - EARLY <= elapsed <= READ_TIMEOUT + SLACK, f"closed after {elapsed:.1f}s"
    assert responses == [], responses
    assert_serving(srv)


def test_slowloris_body_is_cut_at_the_read_timeout(limited):
    srv = limited()
    body = json.dumps({"Limit": 10, "Padding": "p" * 40}).encode()
    request = request_bytes(srv, body)
    head_size = len(request) - len(body)
    elapsed, responses = trickle(srv, request[: head_size + 1], request[head_size + 1 :])
    assert READ_TIMEOUT - EARLY <= elapsed <= READ_TIMEOUT + SLACK, f"closed after {elapsed:.1f}s"
    for response in responses:  # the refusal may or may not reach the client before the close
        assert response.status == 400 and response.error == "SerializationException", response
    assert_serving(srv)


def test_the_read_timeout_bounds_each_request_not_the_connection(limited):
    srv = limited()
    with connect(srv) as sock:
        start = time.monotonic()
        for _ in range(4):
            assert send(sock, request_bytes(srv))
            response = read_response(sock)
            assert response.status == 200, response
            time.sleep(READ_TIMEOUT * 0.75)
        assert time.monotonic() - start > 2 * READ_TIMEOUT


# --------------------------------------------------------------------------- idle keep-alive timeout

def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(limited):
    srv = limited()
    with connect(srv) as sock:
        assert send(sock, request_bytes(srv))
        assert read_response(sock).status == 200
        responses, closed, elapsed = read_until_closed(sock, timeout=IDLE_TIMEOUT + 10)
    assert closed and responses == [], responses
    # The idle timeout closed it, not the (shorter) read timeout.
    assert IDLE_TIMEOUT - EARLY <= elapsed <= IDLE_TIMEOUT + SLACK, f"closed after {elapsed:.1f}s"


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(limited):
    srv = limited()
    with connect(srv) as sock:
        responses, closed, elapsed = read_until_closed(sock, timeout=IDLE_TIMEOUT + 10)
    assert closed and responses == [], responses
    assert IDLE_TIMEOUT - EARLY <= elapsed <= IDLE_TIMEOUT + SLACK, f"closed after {elapsed:.1f}s"
    assert_serving(srv)


# --------------------------------------------------------------------------- concurrent connections

def refused_promptly(server: TrentServer) -> bool:
    """True when the server closes a new connection at once, without an answer."""
    with connect(server) as sock:
        send(sock, request_bytes(server))
        responses, closed, elapsed = read_until_closed(sock, timeout=1)
    return closed and not responses and elapsed < 1


def admitted(server: TrentServer, within: float = 3) -> socket.socket:
    """A new connection on which a signed request is served. The server learns of a close a moment after the
    client closes, so a connection refused meanwhile is retried."""
    deadline = time.monotonic() + within
    while True:
        sock = connect(server)
        if send(sock, request_bytes(server)):
            response = next_response(sock)
            if response is not None:
                assert response.status == 200, response
                return sock
        sock.close()
        assert time.monotonic() < deadline, f"no new connection was served within {within}s"
        time.sleep(0.1)


def test_connections_beyond_the_limit_are_closed_and_the_others_keep_working(limited):
    srv = limited()
    held = []
    try:
        held += [admitted(srv) for _ in range(MAX_CONNECTIONS)]
        for _ in range(3):
            assert refused_promptly(srv), "a connection beyond the limit was served"
        for sock in held:
            assert send(sock, request_bytes(srv))
            assert read_response(sock).status == 200, "an admitted connection stopped working"
        for sock in held[:2]:
            sock.close()
        del held[:2]
        held += [admitted(srv), admitted(srv)]
        assert refused_promptly(srv), "the limit no longer holds once connections were replaced"
    finally:
        for sock in held:
            sock.close()
    admitted(srv).close()
    assert "connection limit reached" in srv.log_text()
    assert srv.proc.poll() is None


# --------------------------------------------------------------------------- broken HTTP framing

CHUNKED = "Transfer-Encoding: chunked"

FRAMING = {
    "body shorter than Content-Length, then EOF": ("Content-Length: 100", b"{}", True),
    "chunk size zz": (CHUNKED, b"zz\r\n{}\r\n0\r\n\r\n", False),
    "100-character chunk size": (CHUNKED, b"1" * 100 + b"\r\n{}\r\n0\r\n\r\n", False),
    "chunk without its CRLF": (CHUNKED, b"2\r\n{}XX0\r\n\r\n", False),
    "no last chunk, then EOF": (CHUNKED, b"2\r\n{}\r\n", True),
    "10,000 trailers": (CHUNKED, b"2\r\n{}\r\n0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(10_000)) + b"\r\n", False),
}


@pytest.mark.parametrize("case", list(FRAMING))
def test_broken_framing_is_a_400_never_a_500(default_server, case):
    framing, payload, half_close = FRAMING[case]
    data = request_bytes(default_server, sign=True, framing=framing) + payload
    responses, closed = exchange(default_server, data, half_close=half_close)
    assert_refused(responses, closed, case, statuses=(400,))
    assert len(responses) == 1, f"{case}: no answer"
    assert responses[0].error == "SerializationException", responses[0]
    assert responses[0].headers.get("connection") == "close", responses[0]
    assert_serving(default_server)
