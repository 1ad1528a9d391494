"""
test_auth_http.py -- issue 3 identity before the upgrade, over raw HTTP: every rejected token is a
401 with its reason (and a log line), never a 101; tokens from the query, Authorization: Bearer
and a cookie; ?user= only from trusted proxies; the session row records who connected.
"""
import hashlib
import hmac
import json
import time

import pytest

from wsp import SECRET, RawWS, Server, b64url, make_token, raw_connect, read_http_response, \
    upgrade_request

WAIT = 5


def sign(payload, header=None, secret=SECRET):
    """An HS256 JWT with exactly this payload (make_token always adds sub and iat)."""
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


def request(srv, path="/ws", headers=()):
    """Send an upgrade request; returns (status, headers, body, socket), the socket still open."""
    extra = "".join(f"{h}\r\n" for h in headers)
    s = raw_connect(srv.port, timeout=WAIT)
    s.sendall(upgrade_request(path, extra=extra))
    status, hdrs, rest = read_http_response(s)
    return status, hdrs, rest, s


def rejected(srv, path="/ws", headers=()):
    """The request must get a 401 (read to the end: the server closes after it); its body."""
    status, hdrs, body, s = request(srv, path, headers)
    try:
        n = int(hdrs.get("content-length", "-1"))
        while len(body) < n or n < 0:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
    finally:
        s.close()
    assert status == 401, (status, hdrs, body)
    assert "upgrade" not in hdrs and "sec-websocket-accept" not in hdrs
    return body.decode()


def accepted(srv, path="/ws", headers=(), user=None):
    """The request must be upgraded; returns the welcome frame after checking the session row."""
    status, hdrs, rest, s = request(srv, path, headers)
    try:
        assert status == 101, (status, hdrs, rest)
        ws = RawWS(s, rest)
        fin, op, payload = ws.recv_frame()
        assert fin and op == 1
        welcome = json.loads(payload)
        assert welcome["type"] == "welcome", welcome
        if user is not None:
            assert welcome["user"] == user
        return welcome
    finally:
        s.close()


def wait_log(srv, text):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if text in srv.log():
            return
        time.sleep(0.02)
    raise AssertionError(f"log has no line with {text!r}")


def sessions(srv):
    return srv.db_rows("SELECT count(*) FROM sessions")[0][0]


@pytest.fixture(scope="module")
def token_srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("tok"))).start()
    yield s
    s.stop()


def now():
    return int(time.time())


def q(token):
    """A request with ?token=; token is a function, so it is minted when the case runs."""
    return lambda: (f"/ws?token={token()}", ())


def hdr(header):
    return lambda: ("/ws", (header(),))


def tampered():
    head, _, sig = make_token("alice").split(".")
    body = b64url(json.dumps({"sub": "root", "exp": now() + 3600}).encode())
    return f"{head}.{body}.{sig}"


TOKEN_401 = [
    # (case, () -> (path, extra headers), reason in the body)
    ("no_token", lambda: ("/ws", ()), "missing token"),
    ("empty_token", lambda: ("/ws?token=", ()), "missing token"),
    ("garbage", q(lambda: "garbage"), "malformed token"),
    ("garbage_dots", q(lambda: "a.b.c"), "malformed token"),
    ("expired", q(lambda: make_token("alice", exp_in=-60)), "token expired"),
    ("wrong_secret", q(lambda: make_token("alice", secret="another-secret-0123456789abcdef")),
     "invalid token"),
    ("tampered", q(tampered), "invalid token"),
    ("alg_none", q(lambda: make_token("alice", alg="none")), "token algorithm not allowed"),
    ("alg_rs256_header",
     q(lambda: sign({"sub": "alice", "exp": now() + 3600}, {"alg": "RS256", "typ": "JWT"})),
     "token algorithm not allowed"),
    ("nbf_future", q(lambda: make_token("alice", extra={"nbf": now() + 300})),
     "token not yet valid"),
    ("sub_missing", q(lambda: sign({"exp": now() + 3600})), "token has no sub"),
    ("sub_too_long", q(lambda: make_token("u" * 65)), "token sub is not a valid user id"),
    ("sub_empty", q(lambda: make_token("")), "token sub is not a valid user id"),
    ("sub_control_char", q(lambda: make_token("al" + chr(1) + "ice")),
     "token sub is not a valid user id"),
    ("sub_number", q(lambda: sign({"sub": 42, "exp": now() + 3600})),
     "token sub is not a valid user id"),
    ("exp_string", q(lambda: sign({"sub": "alice", "exp": "tomorrow"})),
     "token exp is not a number"),
    ("bearer_garbage", hdr(lambda: "Authorization: Bearer not-a-jwt"), "malformed token"),
    ("bearer_expired", hdr(lambda: f"Authorization: Bearer {make_token('alice', exp_in=-60)}"),
     "token expired"),
    ("cookie_not_configured", hdr(lambda: f"Cookie: wsp={make_token('alice')}"), "missing token"),
    ("user_in_token_mode", lambda: ("/ws?user=alice", ()), "missing token"),
]


@pytest.mark.parametrize("case,req,reason", TOKEN_401, ids=[c[0] for c in TOKEN_401])
def test_auth_http_rejects_with_401_and_reason(token_srv, case, req, reason):
    before = sessions(token_srv)
    body = rejected(token_srv, *req())
    assert reason in body, (case, body)
    wait_log(token_srv, f"HTTP 401 {reason}")
    assert sessions(token_srv) == before  # nothing recorded for a rejected client


TOKEN_OK = [
    # (case, user, () -> (path, extra headers))
    ("query", "alice", q(lambda: make_token("alice"))),
    ("query_among_others", "alice", lambda: (f"/ws?x=1&token={make_token('alice')}&y=2", ())),
    ("bearer", "bob", hdr(lambda: f"Authorization: Bearer {make_token('bob')}")),
    ("bearer_lowercase_scheme", "bob", hdr(lambda: f"Authorization: bearer {make_token('bob')}")),
    ("expired_within_leeway", "carol", q(lambda: make_token("carol", exp_in=-5))),
    ("nbf_within_leeway", "carol", q(lambda: make_token("carol", extra={"nbf": now() + 5}))),
    ("no_exp", "dave", q(lambda: sign({"sub": "dave"}))),
    ("sub_64_bytes", "u" * 64, q(lambda: make_token("u" * 64))),
    ("sub_utf8", "zoë", q(lambda: make_token("zoë"))),
]


@pytest.mark.parametrize("case,user,req", TOKEN_OK, ids=[c[0] for c in TOKEN_OK])
def test_auth_http_accepts_token_and_records_session(token_srv, case, user, req):
    path, headers = req()
    welcome = accepted(token_srv, path, headers + ("User-Agent: it-test/1.0",), user=user)
    rows = token_srv.db_rows("SELECT user, remote_addr, user_agent FROM sessions WHERE id = ?",
                             (int(welcome["session"]),))
    assert rows == [(user, "127.0.0.1", "it-test/1.0")]


def test_auth_http_token_from_cookie(make_server):
    srv = make_server(auth={"jwt_cookie": "wsp"}).start()
    welcome = accepted(srv, "/ws", (f"Cookie: theme=dark; wsp={make_token('alice')}; x=1",),
                       user="alice")
    assert srv.db_rows("SELECT user FROM sessions WHERE id = ?", (int(welcome["session"]),)) == \
        [("alice",)]
    # the cookie's token is checked like any other
    assert "token expired" in rejected(srv, "/ws", (f"Cookie: wsp={make_token('a', exp_in=-60)}",))
    assert "missing token" in rejected(srv, "/ws", (f"Cookie: other={make_token('alice')}",))
    # the query parameter comes first
    accepted(srv, f"/ws?token={make_token('bob')}", (f"Cookie: wsp={make_token('alice')}",),
             user="bob")


def test_auth_http_query_mode_from_trusted_peer(make_server):
    srv = make_server(auth={"mode": "query", "trusted_proxies": "127.0.0.1/32"}).start()
    welcome = accepted(srv, "/ws?user=carol", user="carol")
    assert welcome["session"]
    # the front's X-Forwarded-For is believed as well: it is the session's address
    welcome = accepted(srv, "/ws?user=dave", ("X-Forwarded-For: 203.0.113.7",), user="dave")
    rows = srv.db_rows("SELECT user, remote_addr FROM sessions ORDER BY id")
    assert rows == [("carol", "127.0.0.1"), ("dave", "203.0.113.7")]
    assert "invalid user id" in rejected(srv, "/ws?user=" + "u" * 65)
    assert "invalid user id" in rejected(srv, "/ws?user=al%01ice")
    assert "missing user" in rejected(srv, "/ws")
    # query mode alone ignores tokens
    assert "missing user" in rejected(srv, f"/ws?token={make_token('alice')}")
    assert len(srv.db_rows("SELECT id FROM sessions")) == 2


def test_auth_http_query_mode_from_untrusted_peer_is_401(make_server):
    srv = make_server(auth={"mode": "query", "trusted_proxies": "10.0.0.0/8"}).start()
    body = rejected(srv, "/ws?user=carol")
    assert "query identity from untrusted peer" in body
    # a forged X-Forwarded-For from an untrusted peer does not help
    body = rejected(srv, "/ws?user=carol", ("X-Forwarded-For: 10.1.2.3",))
    assert "untrusted" in body
    wait_log(srv, "HTTP 401 query identity from untrusted peer")
    assert sessions(srv) == 0


def test_auth_http_token_and_query_modes_together(make_server):
    srv = make_server(auth={"mode": "token,query", "trusted_proxies": "127.0.0.1/32"}).start()
    accepted(srv, f"/ws?token={make_token('alice')}&user=carol", user="alice")  # a token wins
    accepted(srv, "/ws?user=carol", user="carol")
    # a bad token is refused, not passed over for ?user=
    assert "token expired" in rejected(srv, f"/ws?token={make_token('a', exp_in=-60)}&user=carol")
    assert "missing token or user" in rejected(srv, "/ws")


def test_auth_http_no_101_then_close(token_srv):
    """A rejected client must not see a 101: its first bytes are the 401 status line."""
    s = raw_connect(token_srv.port, timeout=WAIT)
    try:
        s.sendall(upgrade_request("/ws?token=garbage"))
        first = s.recv(12)
        assert first == b"HTTP/1.1 401", first
    finally:
        s.close()
