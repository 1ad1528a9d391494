"""
test_handshake.py -- the HTTP side of the real wsproxy over raw sockets: RFC 6455 §4.2 upgrade checks,
exact status codes and error answers, subprotocols, head limits, slowloris, /healthz and /ws auth.
"""
import base64
import hashlib
import os
import socket
import struct
import threading
import time

import pytest

from wsp import (Server, RawWS, frame, make_token, raw_connect, read_http_response,
                 upgrade_request)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
WAIT = 5  # every socket wait in this file is bounded by this many seconds


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("hs")),
               server={"subprotocols": "chat.v2, chat.v1"}).start()
    yield s
    s.stop()


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def head(lines):
    """A request head from its lines, CRLF-terminated, with the blank line."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ws_lines(path="/echo", key=RFC_KEY, drop=(), extra=()):
    """Header lines of a valid upgrade request, minus the names in drop, plus extra lines."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines = [ln for ln in lines if ln.split(":")[0] not in drop]
    return lines + list(extra)


def read_until_close(s, timeout=WAIT):
    """Everything the server sends until it closes; (bytes, closed). A reset after data counts as closed."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        except socket.timeout:
            return data, False
        if not chunk:
            return data, True
        data += chunk
    return data, False


def parse_response(data):
    """(status, headers with lower-case names, body) of one complete HTTP response."""
    hd, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    lines = hd.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0] == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        assert k.lower() not in headers, f"repeated header {k}"
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers, body


def exchange(port, data):
    """Send data, read the whole answer up to the server's close."""
    s = raw_connect(port, timeout=WAIT)
    try:
        s.sendall(data)
        got, closed = read_until_close(s)
        return got, closed
    finally:
        s.close()


def assert_error_answer(got, closed, status, extra_headers=None):
    """An error answer: exact status, short text body, Connection: close, and the server closed."""
    code, headers, body = parse_response(got)
    assert code == status, got[:300]
    assert headers.get("connection", "").lower() == "close"
    assert headers.get("content-type", "").startswith("text/plain")
    assert int(headers["content-length"]) == len(body)
    assert body.strip(), "error answers carry a reason"
    assert "sec-websocket-accept" not in headers
    for k, v in (extra_headers or {}).items():
        assert headers.get(k.lower()) == v, (k, headers)
    assert closed, "server must close after an error answer"
    return headers, body


def upgrade(port, data, timeout=WAIT):
    """Send an upgrade request; return (status, headers, RawWS or None)."""
    s = raw_connect(port, timeout=timeout)
    s.sendall(data)
    status, headers, rest = read_http_response(s)
    return status, headers, RawWS(s, rest)


# ---- 101 ----

@pytest.mark.parametrize("key", [RFC_KEY, base64.b64encode(bytes(16)).decode(),
                                 base64.b64encode(b"\xff" * 16).decode(),
                                 base64.b64encode(os.urandom(16)).decode()])
def test_handshake_101_exact_accept(srv, key):
    status, headers, ws = upgrade(srv.port, head(ws_lines(key=key)))
    try:
        assert status == 101
        assert headers["sec-websocket-accept"] == accept_for(key)
        assert headers["upgrade"].lower() == "websocket"
        assert "upgrade" in headers["connection"].lower()
        assert "sec-websocket-protocol" not in headers
        assert "sec-websocket-extensions" not in headers
    finally:
        ws.close()


def test_handshake_rfc_example_accept(srv):
    assert accept_for(RFC_KEY) == RFC_ACCEPT
    status, headers, ws = upgrade(srv.port, upgrade_request("/echo", key=RFC_KEY))
    ws.close()
    assert (status, headers["sec-websocket-accept"]) == (101, RFC_ACCEPT)


@pytest.mark.parametrize("lines", [
    ws_lines(drop=("Connection", "Upgrade"), extra=("Connection: keep-alive, Upgrade",
                                                    "Upgrade: WebSocket")),
    ws_lines(drop=("Connection",), extra=("connection: UPGRADE",)),
    ws_lines(extra=("Origin: https://anything.example", "User-Agent: t")),
    [ln.replace("HTTP/1.1", "HTTP/1.2") for ln in ws_lines()],
    ws_lines(drop=("Upgrade",), extra=("Upgrade: h2c, websocket",)),
    ws_lines(drop=("Sec-WebSocket-Version", "Host"), extra=("Sec-WebSocket-Version:   13  ",
                                                            "Host: 127.0.0.1:8080")),
], ids=["token-list", "lower-case-names", "extra-headers", "http-1.2", "upgrade-list",
        "spaces-and-port"])
def test_handshake_101_variants(srv, lines):
    status, headers, ws = upgrade(srv.port, head(lines))
    ws.close()
    assert status == 101
    assert headers["sec-websocket-accept"] == RFC_ACCEPT


# ---- error answers ----

V13 = {"Sec-WebSocket-Version": "13"}

ERROR_CASES = [
    # id, request bytes, status, headers the answer must carry
    ("post", head(["POST /echo HTTP/1.1"] + ws_lines()[1:]), 405, None),
    ("put-unknown-method", head(["PUT /echo HTTP/1.1"] + ws_lines()[1:]), 405, None),
    ("http-1.0", head([ws_lines()[0].replace("1.1", "1.0")] + ws_lines()[1:]), 400, None),
    ("missing-host", head(ws_lines(drop=("Host",))), 400, None),
    ("empty-host", head(ws_lines(drop=("Host",), extra=("Host: ",))), 400, None),
    ("two-hosts", head(ws_lines(extra=("Host: other",))), 400, None),
    ("no-connection", head(ws_lines(drop=("Connection",))), 400, None),
    ("connection-keep-alive", head(ws_lines(drop=("Connection",), extra=("Connection: keep-alive",))),
     400, None),
    ("connection-upgrader", head(ws_lines(drop=("Connection",), extra=("Connection: upgrader",))),
     400, None),
    ("key-missing", head(ws_lines(drop=("Sec-WebSocket-Key",))), 400, None),
    ("key-not-base64", head(ws_lines(key="!!!!!!!!!!!!!!!!!!!!!!==")), 400, None),
    ("key-15-bytes", head(ws_lines(key=base64.b64encode(bytes(15)).decode())), 400, None),
    ("key-17-bytes", head(ws_lines(key=base64.b64encode(bytes(17)).decode())), 400, None),
    ("key-no-padding", head(ws_lines(key=RFC_KEY.rstrip("="))), 400, None),
    ("key-twice", head(ws_lines(extra=(f"Sec-WebSocket-Key: {RFC_KEY}",))), 400, None),
    ("version-twice", head(ws_lines(extra=("Sec-WebSocket-Version: 13",))), 400, None),
    ("bad-request-line", b"GET /echo\r\nHost: x\r\n\r\n", 400, None),
    ("bare-lf", b"GET /echo HTTP/1.1\nHost: x\n\n", 400, None),
    ("plain-get-echo", head(["GET /echo HTTP/1.1", "Host: x"]), 426, V13),
    ("plain-get-ws", head(["GET /ws HTTP/1.1", "Host: x"]), 426, V13),
    ("upgrade-h2c", head(ws_lines(drop=("Upgrade",), extra=("Upgrade: h2c",))), 426, V13),
    ("version-8", head(ws_lines(drop=("Sec-WebSocket-Version",),
                                extra=("Sec-WebSocket-Version: 8",))), 426, V13),
    ("version-missing", head(ws_lines(drop=("Sec-WebSocket-Version",))), 426, V13),
    ("version-ws-path", head(ws_lines("/ws", drop=("Sec-WebSocket-Version",),
                                      extra=("Sec-WebSocket-Version: 7",))), 426, V13),
    ("unknown-path", head(ws_lines("/nope")), 404, None),
    ("unknown-path-plain", head(["GET /echo/x HTTP/1.1", "Host: x"]), 404, None),
]


@pytest.mark.parametrize("data,status,extra", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_handshake_error_answer(srv, data, status, extra):
    got, closed = exchange(srv.port, data)
    assert_error_answer(got, closed, status, extra)


def test_handshake_405_has_allow(srv):
    got, closed = exchange(srv.port, head(["POST /echo HTTP/1.1"] + ws_lines()[1:]))
    assert_error_answer(got, closed, 405, {"Allow": "GET"})


@pytest.fixture(scope="module")
def origin_srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("origin")),
               server={"origins": "https://good.example"}).start()
    yield s
    s.stop()


@pytest.mark.parametrize("origins,status", [
    (["https://evil.example"], 403),
    (["https://good.example.evil"], 403),
    (["http://good.example"], 403),
    (["null"], 403),
    (["https://good.example", "https://good.example"], 403),
    (["https://good.example"], 101),
    (["HTTPS://GOOD.EXAMPLE"], 101),
    ([], 101),
], ids=["evil", "suffix", "scheme", "null", "two-origins", "good", "good-case", "none"])
def test_handshake_origin(origin_srv, origins, status):
    data = head(ws_lines(extra=[f"Origin: {o}" for o in origins]))
    if status == 101:
        st, headers, ws = upgrade(origin_srv.port, data)
        ws.close()
        assert st == 101
    else:
        got, closed = exchange(origin_srv.port, data)
        assert_error_answer(got, closed, 403)


# ---- subprotocols (server list "chat.v2, chat.v1") ----

@pytest.mark.parametrize("offers,chosen", [
    (["chat.v1"], "chat.v1"),
    (["x"], None),
    (["chat.v1, chat.v2"], "chat.v2"),
    (["chat.v1", "chat.v2"], "chat.v2"),
    (["x, chat.v1"], "chat.v1"),
    (["CHAT.V1"], None),
    (["chat"], None),
    ([], None),
], ids=["v1", "unknown", "both-one-header", "both-two-headers", "second-of-list", "case",
        "prefix", "none"])
def test_handshake_subprotocol(srv, offers, chosen):
    data = head(ws_lines(extra=[f"Sec-WebSocket-Protocol: {o}" for o in offers]))
    status, headers, ws = upgrade(srv.port, data)
    ws.close()
    assert status == 101
    assert headers.get("sec-websocket-protocol") == chosen


# ---- head size limit (max_header_size 8KiB by default) ----

def padded_head(total, path="/echo"):
    """A valid upgrade head of exactly total bytes, padded with an X-Pad header."""
    base = head(ws_lines(path, extra=("X-Pad: ",)))
    pad = total - len(base)
    assert pad >= 0
    return head(ws_lines(path, extra=("X-Pad: " + "a" * pad,)))


@pytest.mark.parametrize("size", [8 * 1024 - 1, 8 * 1024])
def test_handshake_head_up_to_limit_101(srv, size):
    data = padded_head(size)
    assert len(data) == size
    status, _, ws = upgrade(srv.port, data)
    ws.close()
    assert status == 101


@pytest.mark.parametrize("size", [8 * 1024 + 1, 8 * 1024 + 2, 20000])
def test_handshake_head_over_limit_431(srv, size):
    data = padded_head(size)
    got, closed = exchange(srv.port, data)
    assert_error_answer(got, closed, 431)


def test_handshake_too_many_headers_431(srv):
    got, closed = exchange(srv.port, head(ws_lines(extra=[f"X-H{i}: v" for i in range(80)])))
    assert_error_answer(got, closed, 431)


def flood_head(port, total):
    """Send an unterminated head of `total` bytes from a thread; return what the server answered."""
    s = raw_connect(port, timeout=WAIT)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: ")
    sent = [0]

    def pump():
        chunk = b"a" * 16384
        try:
            while sent[0] < total:
                s.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass  # the server answered and closed: that is the point

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    started = time.monotonic()
    got, closed = read_until_close(s)
    elapsed = time.monotonic() - started
    t.join(WAIT)
    s.close()
    return got, closed, elapsed


def test_handshake_1mib_head_answered_431_without_buffering(srv):
    rss_before = srv.rss_kib()
    for _ in range(8):
        got, closed, elapsed = flood_head(srv.port, 1024 * 1024)
        assert_error_answer(got, closed, 431)
        assert elapsed < WAIT
    # Eight 1 MiB heads, had they been buffered, would have grown the server by megabytes.
    assert srv.rss_kib() - rss_before < 4 * 1024, "server buffered the oversized heads"


# ---- slowloris (handshake_timeout 500ms) ----

@pytest.fixture(scope="module")
def slow_srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("slow")),
               server={"handshake_timeout": "500ms"}).start()
    yield s
    s.stop()


def test_handshake_slowloris_half_head_closed(slow_srv):
    s = raw_connect(slow_srv.port, timeout=WAIT)
    try:
        started = time.monotonic()
        s.sendall(upgrade_request("/echo")[:40])
        got, closed = read_until_close(s, timeout=4)
        elapsed = time.monotonic() - started
    finally:
        s.close()
    assert closed, "a half-sent head must be dropped after handshake_timeout"
    assert got == b""
    assert 0.4 <= elapsed < 3, elapsed


def test_handshake_slowloris_dribble_closed(slow_srv):
    """Bytes trickling in do not extend the deadline: it runs from accept, not from the last read."""
    s = raw_connect(slow_srv.port, timeout=WAIT)
    data = upgrade_request("/echo")
    started = time.monotonic()
    closed = False
    try:
        for i in range(len(data) - 4):
            try:
                s.sendall(data[i:i + 1])
            except OSError:
                closed = True
                break
            s.settimeout(0.05)
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
            if time.monotonic() - started > 4:
                break
        elapsed = time.monotonic() - started
    finally:
        s.close()
    assert closed
    assert 0.4 <= elapsed < 3, elapsed


def test_handshake_slowloris_idle_connection_closed(slow_srv):
    s = raw_connect(slow_srv.port, timeout=WAIT)
    try:
        started = time.monotonic()
        got, closed = read_until_close(s, timeout=4)
        assert closed and got == b""
        assert 0.4 <= time.monotonic() - started < 3
    finally:
        s.close()


def test_handshake_timeout_does_not_hit_upgraded(slow_srv):
    status, _, ws = upgrade(slow_srv.port, upgrade_request("/echo"))
    try:
        assert status == 101
        time.sleep(0.8)
        ws.send(frame(0x1, b"still here"))
        assert ws.recv_frame() == (True, 0x1, b"still here")
    finally:
        ws.close()


# ---- /healthz ----

def test_handshake_healthz(srv):
    got, closed = exchange(srv.port, head(["GET /healthz HTTP/1.1", "Host: x"]))
    status, headers, body = parse_response(got)
    assert status == 200
    assert body.rstrip(b"\n") == b"ok"
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"].lower() == "close"
    assert closed


# ---- /ws needs a token ----

@pytest.mark.parametrize("target,extra", [
    ("/ws", ()),
    ("/ws?token=", ()),
    ("/ws?token=garbage", ()),
    ("/ws?token=" + make_token("alice", secret="not-the-secret"), ()),
    ("/ws?token=" + make_token("alice", exp_in=-3600), ()),
    ("/ws?token=" + make_token("alice", alg="none"), ()),
    ("/ws", ("Authorization: Bearer garbage",)),
], ids=["none", "empty", "garbage", "wrong-secret", "expired", "alg-none", "bearer-garbage"])
def test_handshake_ws_needs_token_401(srv, target, extra):
    got, closed = exchange(srv.port, head(ws_lines(target, extra=extra)))
    assert got.startswith(b"HTTP/1.1 401 "), got[:100]
    assert b"101 Switching" not in got
    _, body = assert_error_answer(got, closed, 401)
    assert len(body.strip()) >= 5


def test_handshake_ws_valid_token_101(srv):
    status, headers, ws = upgrade(srv.port, head(ws_lines("/ws?token=" + make_token("hs-alice"))))
    ws.close()
    assert status == 101
    assert headers["sec-websocket-accept"] == RFC_ACCEPT


# ---- how the bytes arrive ----

def test_handshake_head_in_1_byte_writes(srv):
    s = raw_connect(srv.port, timeout=WAIT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        data = upgrade_request("/echo")
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
            time.sleep(0.001)
        status, headers, rest = read_http_response(s)
        assert status == 101
        assert headers["sec-websocket-accept"] == RFC_ACCEPT
        ws = RawWS(s, rest)
        ws.send(frame(0x1, b"after slow head"))
        assert ws.recv_frame() == (True, 0x1, b"after slow head")
    finally:
        s.close()


def test_handshake_frames_in_same_packet_as_head(srv):
    s = raw_connect(srv.port, timeout=WAIT)
    try:
        s.sendall(upgrade_request("/echo") + frame(0x1, b"early") + frame(0x9, b"p") +
                  frame(0x2, b"\x00\x01") + frame(0x8, struct.pack("!H", 1000)))
        status, _, rest = read_http_response(s)
        assert status == 101
        ws = RawWS(s, rest)
        assert ws.recv_frame() == (True, 0x1, b"early")
        assert ws.recv_frame() == (True, 0xA, b"p")
        assert ws.recv_frame() == (True, 0x2, b"\x00\x01")
        assert ws.recv_frame() == (True, 0x8, struct.pack("!H", 1000))
        assert ws.is_closed_by_peer(timeout=WAIT)
    finally:
        s.close()


def test_handshake_bad_frame_in_same_packet_as_head(srv):
    s = raw_connect(srv.port, timeout=WAIT)
    try:
        s.sendall(upgrade_request("/echo") + frame(0x1, b"unmasked", mask=False))
        status, _, rest = read_http_response(s)
        assert status == 101
        ws = RawWS(s, rest)
        assert ws.recv_close() == 1002
        assert ws.is_closed_by_peer(timeout=WAIT)
    finally:
        s.close()


def test_handshake_error_answer_ignores_pipelined_bytes(srv):
    """Bytes after a rejected head are not read as a second request or as frames."""
    data = head(["GET /nope HTTP/1.1", "Host: x"]) + upgrade_request("/echo") + frame(0x1, b"x")
    got, closed = exchange(srv.port, data)
    assert_error_answer(got, closed, 404)
    assert got.count(b"HTTP/1.1") == 1
