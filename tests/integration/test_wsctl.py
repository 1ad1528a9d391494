"""
test_wsctl.py -- the admin CLI against a database filled by a real run: aligned tables and JSON,
read-only access (the .db file's bytes never change) with the server running and stopped, kick and
push through the API, usage errors and exit statuses.
Run: cd tests/integration && /usr/bin/python3 -m pytest -q test_wsctl.py
"""
import asyncio
import hashlib
import json
import os
import re
import socket
import sqlite3
import struct
import subprocess
import time

import pytest
import websockets

from wsp import API_KEY, PG, ROOT, Server, frame, make_token, raw_ws, wait_api

WSCTL = os.environ.get("WSCTL_BIN", os.path.join(ROOT, "build", "wsctl"))
SESSION_COLS = ["ID", "USER", "STATE", "CONNECTED", "DURATION", "SEEN", "REASON", "ADDRESS"]


# ---- helpers ----

def run(*args, srv=None, cwd=None, input=None, env_extra=None):
    """Run wsctl (with --config of srv when given); returns CompletedProcess with text output."""
    env = {k: v for k, v in os.environ.items() if k != "WSCTL_API_KEY"}
    env.update(env_extra or {})
    argv = [WSCTL] + (["--config", srv.config_path] if srv else []) + list(args)
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd or "/", input=input,
                          env=env, timeout=30)


def ok(*args, **kw):
    r = run(*args, **kw)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return r


def table(text):
    """Split an aligned table into rows of cells, checking that every column starts where its
    header does (cells are separated by two or more spaces; the last column may hold spaces)."""
    lines = text.rstrip("\n").split("\n")
    head = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    rows = []
    for line in lines[1:]:
        cells = []
        for i, st in enumerate(starts):
            assert st == 0 or line[st - 1] == " ", f"column {i} not aligned in {line!r}"
            assert line[st] != " ", f"column {i} not aligned in {line!r}"
            end = starts[i + 1] if i + 1 < len(starts) else len(line)
            cells.append(line[st:end].strip())
        rows.append(cells)
    return head.split(), rows


def kv(text):
    out = {}
    for line in text.rstrip("\n").split("\n"):
        k, v = re.match(r"^(\S+(?: \S+)?)\s{2,}(.*)$", line).groups()
        out[k] = v
    return out


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Chat:
    """A blocking chat client on a raw socket (no event loop to keep alive between tests)."""

    def __init__(self, srv, user, extra=None):
        self.ws = raw_ws(srv.port, f"/ws?token={make_token(user, extra=extra)}")
        self.welcome = self.until("welcome")
        self.session = int(self.welcome["session"])
        self.until("replayed")

    def send(self, obj):
        self.ws.send(frame(1, json.dumps(obj).encode()))

    def recv(self):
        while True:
            fin, op, payload = self.ws.recv_frame()
            if op == 1:
                return json.loads(payload)
            if op == 8:
                raise EOFError(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
            if op == 9:
                self.ws.send(frame(10, payload))

    def until(self, type_):
        while True:
            f = self.recv()
            if f["type"] == type_:
                return f

    def close(self):
        self.ws.send(frame(8, struct.pack("!H", 1000)))
        code = self.ws.recv_close()
        self.ws.close()
        return code


def api_delete(srv, path):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", srv.api_port, timeout=5)
    c.request("DELETE", path, headers={"Authorization": f"Bearer {API_KEY}"})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


# ---- a database filled by a real run ----

@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsctl")
    srv = Server(str(d), heartbeat={"ping_interval": "0"}).start()
    wait_api(srv)
    a1, a2, b = Chat(srv, "alice"), Chat(srv, "alice"), Chat(srv, "bob")
    for c in (a1, b):
        c.send({"type": "join", "room": "lobby"})
        c.until("joined")
    for i in range(3):
        a1.send({"type": "send", "to": "bob", "body": {"text": f"hi bob {i}"}, "cid": f"a{i}"})
        a1.until("sent")
    b.send({"type": "send", "to": "alice", "body": "hello alice", "cid": "b0"})
    b.until("sent")
    a1.send({"type": "send", "room": "lobby", "body": {"text": "room message \u2713"}, "cid": "r0"})
    a1.until("sent")
    carol = Chat(srv, "carol")
    assert carol.close() == 1000
    dave = Chat(srv, "dave")
    assert api_delete(srv, f"/api/v1/sessions/{dave.session}") == 204
    assert dave.ws.recv_close() == 1008
    dave.ws.close()
    assert a2.close() == 1000
    time.sleep(0.3)
    info = {"alice1": a1.session, "alice2": a2.session, "bob": b.session, "carol": carol.session,
            "dave": dave.session, "clients": (a1, b)}
    yield srv, info
    for c in (a1, b):
        c.ws.close()
    srv.stop()


# ---- sessions ----

def test_wsctl_sessions_table_is_aligned_newest_first(filled):
    srv, info = filled
    head, rows = table(ok("sessions", srv=srv).stdout)
    assert head == SESSION_COLS
    ids = [int(r[0]) for r in rows]
    assert ids == sorted(ids, reverse=True) and len(ids) == 5
    by_id = {int(r[0]): dict(zip(SESSION_COLS, r)) for r in rows}
    assert by_id[info["dave"]]["STATE"] == "ended" and by_id[info["dave"]]["REASON"] == "kicked"
    assert by_id[info["carol"]]["REASON"] == "client_close"
    assert by_id[info["alice1"]]["STATE"] == "active" and by_id[info["alice1"]]["REASON"] == "-"
    for r in by_id.values():
        assert re.fullmatch(r"just now|\d+[smhd] ago", r["CONNECTED"]), r
        assert re.fullmatch(r"\d+ms|\d+s|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh", r["DURATION"]), r
        assert r["ADDRESS"] == "127.0.0.1"


def test_wsctl_sessions_json_matches_the_database(filled):
    srv, info = filled
    j = json.loads(ok("sessions", "--json", srv=srv).stdout)
    rows = srv.db_rows("SELECT id, user, connected_at, ended_at, end_reason FROM sessions "
                       "ORDER BY id DESC")
    assert [(s["id"], s["user"], s["connected_at"], s["ended_at"], s["end_reason"])
            for s in j["sessions"]] == rows
    assert j["next_before"] is None
    assert {s["state"] for s in j["sessions"]} == {"active", "ended"}
    assert all(s["user_agent"] is None for s in j["sessions"])  # raw clients send none


def test_wsctl_sessions_filters_and_paging(filled):
    srv, info = filled
    def ids(*args):
        return [s["id"] for s in json.loads(ok("sessions", "--json", *args, srv=srv).stdout)["sessions"]]
    assert ids("--user", "alice") == [info["alice2"], info["alice1"]]
    assert set(ids("--active")) == {info["alice1"], info["bob"]}
    assert set(ids("--ended")) == {info["alice2"], info["carol"], info["dave"]}
    assert ids("--user", "alice", "--ended") == [info["alice2"]]
    assert len(ids("--since", "1h")) == 5
    assert ids("--since", "1ms") == []
    r = ok("sessions", "--limit", "2", srv=srv)
    _, rows = table(r.stdout)
    assert len(rows) == 2
    m = re.search(r"--before (\d+)", r.stderr)
    assert m and int(m.group(1)) == int(rows[-1][0])
    rest = ids("--before", m.group(1))
    assert len(rest) == 3 and max(rest) < int(m.group(1))
    j = json.loads(ok("sessions", "--limit", "2", "--json", srv=srv).stdout)
    assert j["next_before"] == int(rows[-1][0])
    assert ok("sessions", "--user", "nobody", srv=srv).stdout == "no sessions\n"


def test_wsctl_session_detail_and_not_found(filled):
    srv, info = filled
    d = kv(ok("session", str(info["dave"]), srv=srv).stdout)
    assert d["user"] == "dave" and d["state"] == "ended" and d["end_reason"] == "kicked"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \((just now|\d+[smhd] ago)\)$", d["connected"])
    assert d["subprotocol"] == "-" and d["remote_addr"] == "127.0.0.1"
    a = kv(ok("session", str(info["alice1"]), srv=srv).stdout)
    assert a["state"] == "active" and a["ended"] == "-" and a["end_reason"] == "-"
    j = json.loads(ok("--json", "session", str(info["carol"]), srv=srv).stdout)
    assert j["id"] == info["carol"] and j["end_reason"] == "client_close" and j["ended_at"] > 0
    r = run("session", "99999", srv=srv)
    assert r.returncode == 1 and "no session 99999" in r.stderr and r.stdout == ""


# ---- presence, history, stats ----

def test_wsctl_presence(filled):
    srv, info = filled
    head, rows = table(ok("presence", "alice", "bob", "carol", srv=srv).stdout)
    assert head == ["USER", "STATE", "CONNECTIONS", "LAST_SEEN"]
    by = {r[0]: r for r in rows}
    assert by["alice"][1:3] == ["online", "1"] and by["alice"][3] == "now"
    assert by["bob"][1] == "online"
    assert by["carol"][1:3] == ["offline", "0"] and re.fullmatch(r"just now|\d+[smhd] ago", by["carol"][3])
    r = run("presence", "alice", "nobody", srv=srv)
    assert r.returncode == 1
    assert table(r.stdout)[1][1] == ["nobody", "unknown", "0", "never"]
    j = json.loads(ok("presence", "--json", "carol", srv=srv).stdout)
    assert j["users"][0]["state"] == "offline" and j["users"][0]["last_seen"] > 0


def test_wsctl_history_direct_and_room(filled):
    srv, info = filled
    head, rows = table(ok("history", "--with", "alice", "--user", "bob", srv=srv).stdout)
    assert head == ["ID", "SENT", "FROM", "TO", "BODY"]
    assert [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)  # oldest first
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("alice", "bob", '{"text":"hi bob 0"}'), ("alice", "bob", '{"text":"hi bob 1"}'),
        ("alice", "bob", '{"text":"hi bob 2"}'), ("bob", "alice", '"hello alice"')]
    j = json.loads(ok("history", "--json", "--user", "alice", "--with", "bob", srv=srv).stdout)
    assert [m["id"] for m in j["items"]] == sorted((m["id"] for m in j["items"]), reverse=True)
    assert j["items"][0]["body"] == "hello alice" and j["more"] is False
    assert j["items"][-1]["cid"] == "a0"
    r = ok("history", "--with", "alice", "--user", "bob", "--limit", "2", srv=srv)
    assert len(table(r.stdout)[1]) == 2 and "--before" in r.stderr
    _, rows = table(ok("history", "--room", "lobby", srv=srv).stdout)
    assert rows == [[rows[0][0], rows[0][1], "alice", "#lobby", '{"text":"room message \u2713"}']]
    assert ok("history", "--room", "nowhere", srv=srv).stdout == "no messages\n"


def test_wsctl_history_clips_long_bodies(make_server):
    srv = make_server().start()
    wait_api(srv)
    long = "x" * 500
    ok("push", "--to", "bob", long, srv=srv)
    _, rows = table(ok("history", "--with", "system", "--user", "bob", srv=srv).stdout)
    assert rows[0][4].endswith("...") and len(rows[0][4]) == 60
    j = json.loads(ok("history", "--json", "--with", "system", "--user", "bob", srv=srv).stdout)
    assert j["items"][0]["body"] == long


def test_wsctl_stats(filled):
    srv, info = filled
    s = kv(ok("stats", srv=srv).stdout)
    (total,), = srv.db_rows("SELECT count(*) FROM sessions")
    (msgs,), = srv.db_rows("SELECT count(*) FROM messages")
    assert s["sessions active"] == "2" and s["sessions total"] == str(total)
    assert s["users online"] == "2" and s["messages"] == str(msgs) and s["rooms"] == "1"
    assert s["pending direct"] == "4"  # nobody acked
    assert s["database"].startswith(("postgresql" if PG else srv.db) + " (")
    j = json.loads(ok("stats", "--json", srv=srv).stdout)
    assert j["sessions_total"] == total and j["messages"] == msgs and j["schema_version"] >= 1
    if not PG:  # SQLite-specific: the file's size
        assert j["database_bytes"] == os.path.getsize(srv.db)


# ---- read-only, config discovery ----

QUERIES = [["sessions"], ["sessions", "--json"], ["session", "1"], ["presence", "alice", "bob"],
           ["history", "--with", "alice", "--user", "bob"], ["history", "--room", "lobby"], ["stats"]]


@pytest.mark.skipif(PG, reason="SQLite-specific: checks the .db and -wal files' bytes")
def test_wsctl_queries_leave_the_db_file_unchanged_while_the_server_runs(filled):
    srv, info = filled
    before, mtime = sha(srv.db), os.stat(srv.db).st_mtime_ns
    wal = sha(srv.db + "-wal") if os.path.exists(srv.db + "-wal") else None
    for q in QUERIES:
        run(*q, srv=srv)
    assert sha(srv.db) == before and os.stat(srv.db).st_mtime_ns == mtime
    if wal:
        assert sha(srv.db + "-wal") == wal
    # the server was not blocked by the readers: it still writes
    a1, b = info["clients"]
    a1.send({"type": "send", "to": "bob", "body": "still writable", "cid": "after-wsctl"})
    assert a1.until("sent")["id"] > 0
    while (m := b.until("msg")).get("cid") != "after-wsctl":
        pass
    assert m["body"] == "still writable"


@pytest.mark.skipif(PG, reason="SQLite-specific: checks the .db file's bytes")
def test_wsctl_queries_work_and_write_nothing_when_the_server_is_down(make_server):
    srv = make_server().start()
    wait_api(srv)
    c = Chat(srv, "alice")
    c.send({"type": "send", "to": "bob", "body": "x", "cid": "1"})
    c.until("sent")
    c.close()
    assert srv.stop() == 0
    before, mtime = sha(srv.db), os.stat(srv.db).st_mtime_ns
    for q in QUERIES:
        assert run(*q, srv=srv).returncode in (0, 1), q
    assert sha(srv.db) == before and os.stat(srv.db).st_mtime_ns == mtime
    j = json.loads(ok("sessions", "--json", srv=srv).stdout)
    assert [s["end_reason"] for s in j["sessions"]] == ["client_close"]


@pytest.mark.skipif(PG, reason="SQLite-specific: --db FILE and the file path wsctl reports")
def test_wsctl_finds_wsproxy_ini_in_the_current_directory_or_takes_db(filled):
    srv, info = filled
    r = ok("stats", "--json", cwd=srv.dir)
    assert json.loads(r.stdout)["database"] == srv.db
    r = ok("--db", srv.db, "stats", "--json", cwd="/")
    assert json.loads(r.stdout)["sessions_total"] >= 5
    r = run("--db", "/nonexistent/wsproxy.db", "stats")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run("--config", "/nonexistent.ini", "stats")
    assert r.returncode == 2 and "cannot" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run wsctl as another user")
@pytest.mark.skipif(PG, reason="SQLite-specific: copies the .db file into a read-only directory")
def test_wsctl_reads_a_stopped_database_in_a_directory_it_cannot_write(make_server):
    import shutil
    import tempfile
    srv = make_server().start()
    wait_api(srv)
    ok("push", "--to", "bob", "kept", srv=srv)
    assert srv.stop() == 0  # a clean stop removes -wal and -shm
    d = tempfile.mkdtemp(prefix="wsctl-ro-")  # pytest's tmp dirs are not reachable for nobody
    db = os.path.join(d, "wsproxy.db")
    try:
        shutil.copyfile(srv.db, db)
        os.chmod(d, 0o755)
        os.chmod(db, 0o644)
        before = sha(db)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", WSCTL,
                            "--db", db, "history", "--json", "--with", "system", "--user", "bob"],
                           capture_output=True, text=True, cwd="/")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["items"][0]["body"] == "kept"
        # no -wal/-shm could be made here, and none were
        assert sorted(os.listdir(d)) == ["wsproxy.db"] and sha(db) == before
    finally:
        shutil.rmtree(d)


def test_wsctl_refuses_a_file_that_is_not_a_wsproxy_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    r = run("--db", str(junk), "stats")
    assert r.returncode == 2 and "junk.db" in r.stderr


# ---- kick and push through the API ----

def test_wsctl_kick_closes_a_live_client_with_1008(server):
    wait_api(server)

    async def main():
        ws = await websockets.connect(server.chat_url("mallory"))
        welcome = json.loads(await ws.recv())
        sid = welcome["session"]
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: run("kick", sid, srv=server))
        assert r.returncode == 0 and r.stdout == f"session {sid} kicked\n"
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008 and ws.close_reason == "kicked"
        return sid

    sid = asyncio.run(main())
    assert kv(ok("session", sid, srv=server).stdout)["end_reason"] == "kicked"
    r = run("kick", sid, srv=server)
    assert r.returncode == 1 and "not_live" in r.stderr
    r = run("kick", "424242", srv=server)
    assert r.returncode == 1 and "not_found" in r.stderr
    r = run("kick", "--json", "424242", srv=server)
    assert r.returncode == 1


def test_wsctl_push_to_user_room_and_broadcast(make_server):
    srv = make_server(heartbeat={"ping_interval": "0"}).start()
    wait_api(srv)
    bob = Chat(srv, "bob")
    bob.send({"type": "join", "room": "ops"})
    bob.until("joined")
    r = ok("push", "--to", "bob", '{"text":"deploy done"}', srv=srv)
    m = re.fullmatch(r"message (\d+) stored, delivered live to 1 connection\n", r.stdout)
    assert m
    got = bob.until("msg")
    assert got["id"] == int(m.group(1)) and got["body"] == {"text": "deploy done"}
    assert got["from"] == "system"
    ok("push", "--room", "ops", "--from", "ci", "plain words", srv=srv)
    got = bob.until("msg")
    assert got["room"] == "ops" and got["from"] == "ci" and got["body"] == "plain words"
    r = ok("push", "--broadcast", "--json", "42", srv=srv)
    assert json.loads(r.stdout) == {"live": 1}
    got = bob.until("broadcast")
    assert got["body"] == 42
    ok("push", "--to", "bob", "--text", '{"a":1}', srv=srv)
    assert bob.until("msg")["body"] == '{"a":1}'
    ok("push", "--to", "bob", "-", srv=srv, input='{"from":"stdin"}\n')
    assert bob.until("msg")["body"] == {"from": "stdin"}
    first = json.loads(ok("push", "--to", "bob", "--cid", "x1", "--json", "1", srv=srv).stdout)
    r = ok("push", "--to", "bob", "--cid", "x1", "2", srv=srv)
    assert r.stdout == f"already pushed as message {first['id']} (same cid); nothing stored\n"
    # offline user: stored, delivered later
    r = ok("push", "--to", "zoe", "later", srv=srv)
    assert "delivered live to 0 connections" in r.stdout
    r = ok("push", "--room", "nobody-here", "hello?", srv=srv)
    assert re.fullmatch(r"message \d+ stored; room nobody-here has no members, nobody will get it\n",
                        r.stdout), r.stdout
    bob.ws.close()


def test_wsctl_api_target_and_key_errors(server):
    wait_api(server)
    r = run("push", "--to", "bob", "x", "--key", "wrong", srv=server)
    assert r.returncode == 2 and "401" in r.stderr and "unauthorized" in r.stderr
    r = run("push", "--to", "bob", "x", srv=server, env_extra={"WSCTL_API_KEY": "wrong-too"})
    assert r.returncode == 2 and "401" in r.stderr
    r = run("push", "--to", "bob", "x", "--api", server.api_url, "--key", API_KEY)
    assert r.returncode == 0, r.stderr
    r = run("push", "--to", "bob", "x", "--api", f"http://127.0.0.1:{server.port + 0}/", "--key", API_KEY)
    assert r.returncode == 2
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    r = run("kick", "1", "--api", f"http://127.0.0.1:{closed}", "--key", API_KEY)
    assert r.returncode == 2 and "cannot connect" in r.stderr
    r = run("kick", "1", "--api", "ftp://x", "--key", API_KEY)
    assert r.returncode == 2 and "bad API URL" in r.stderr
    r = run("kick", "1", "--api", server.api_url)
    assert r.returncode == 2 and "no API key" in r.stderr


def test_wsctl_api_disabled_in_config(make_server):
    srv = make_server(api={"listen": ""}).start()
    r = run("push", "--to", "bob", "x", srv=srv)
    assert r.returncode == 2 and "disabled" in r.stderr


# ---- usage ----

@pytest.mark.parametrize("argv", [
    [], ["--bogus"], ["bogus"], ["sessions", "--bogus"], ["sessions", "--active", "--ended"],
    ["sessions", "--limit", "0"], ["sessions", "--limit"], ["sessions", "--since", "soon"],
    ["sessions", "--user", ""], ["sessions", "extra"], ["session"], ["session", "x"],
    ["session", "1", "2"], ["session", "0"], ["presence"], ["presence", "bad\x01name"], ["history"],
    ["history", "--with", "a"], ["history", "--room", "r", "--with", "a"],
    ["history", "--room", "r", "--limit", "1001"], ["stats", "extra"], ["kick"], ["kick", "abc"],
    ["kick", "1", "2"], ["push", "hi"], ["push", "--to", "a", "--room", "b", "x"], ["push", "--to", "a"],
    ["push", "--to", "a", "x", "y"], ["push", "--broadcast", "--cid", "", "x"],
    ["status", "extra"], ["message"], ["message", "x"], ["message", "1", "2"], ["token"],
    ["token", "a", "b"], ["token", "bad\x01name"], ["token", "a", "--ttl", "soon"],
    ["token", "a", "--ttl", "0s"], ["backup"], ["backup", "a", "b"], ["rooms", "extra"],
    ["rooms", "--limit", "0"], ["rooms", "--limit", "1001"], ["rooms", "--after", ""], ["members"],
    ["members", "a", "b"], ["members", "bad\x01name"], ["conversations"], ["conversations", "a", "b"],
    ["conversations", "a", "--limit", "101"], ["conversations", "a", "--before", "x"], ["add"],
    ["add", "r"], ["add", "r", "u", "x"], ["add", "r", "bad\x01name"], ["remove", "r"],
    ["remove", "bad\x01room", "u"], ["kick", "1", "--user", "a"], ["kick", "--user", ""],
])
def test_wsctl_bad_usage_exits_2_with_usage(argv):
    r = run(*argv)
    assert r.returncode == 2, (argv, r.stdout, r.stderr)
    assert "usage: wsctl" in r.stderr
    assert r.stdout == ""


ALL_COMMANDS = ["sessions", "session", "presence", "history", "stats", "status", "message", "token",
                "backup", "kick", "push", "rooms", "members", "conversations", "add", "remove"]


@pytest.mark.parametrize("cmd", ALL_COMMANDS)
def test_wsctl_help_on_every_subcommand(cmd):
    r = run(cmd, "--help")
    assert r.returncode == 0 and r.stdout.startswith(f"usage: wsctl {cmd}")
    assert "--json" in r.stdout and r.stderr == ""
    assert run("help", cmd).stdout == r.stdout


def test_wsctl_global_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and "Commands:" in r.stdout and "Exit status" in r.stdout
    for cmd in ALL_COMMANDS:
        assert f"\n  {cmd}" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("wsctl ")


# ---- where the config is: the same rule as the server ----

def _in_private_etc(ini_text, cwd, *argv):
    """Run argv with a private, empty /etc (tmpfs in a mount namespace) holding only
    /etc/wsproxy/wsproxy.ini = ini_text: the machine's /etc is never touched."""
    script = ('mount -t tmpfs none /etc && mkdir /etc/wsproxy && cat > /etc/wsproxy/wsproxy.ini && '
              'exec "$@"')
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv], input=ini_text,
                          capture_output=True, text=True, cwd=cwd, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"),
                    reason="needs root and unshare for a private /etc")
@pytest.mark.skipif(PG, reason="SQLite-specific: a system ini with [store] path, reported back as the database")
def test_wsctl_and_server_find_the_config_by_the_same_rule(filled, tmp_path):
    from wsp import BIN
    srv, info = filled
    system_ini = f"[store]\npath = {srv.db}\n"
    # no --config, no ./wsproxy.ini: /etc/wsproxy/wsproxy.ini
    r = _in_private_etc(system_ini, str(tmp_path), WSCTL, "stats", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["database"] == srv.db
    r = _in_private_etc("[server]\nbogus = 1\n", str(tmp_path), BIN, "--check")
    assert r.returncode == 2 and "config /etc/wsproxy/wsproxy.ini:2: unknown key [server] bogus" in r.stderr
    r = _in_private_etc("[server]\nbogus = 1\n", str(tmp_path), WSCTL, "stats")
    assert r.returncode == 2 and "/etc/wsproxy/wsproxy.ini:2: unknown key" in r.stderr
    # ./wsproxy.ini comes first, for both
    (tmp_path / "wsproxy.ini").write_text(f"[store]\npath = {tmp_path / 'other.db'}\n")
    r = _in_private_etc(system_ini, str(tmp_path), WSCTL, "stats")
    assert r.returncode == 2 and str(tmp_path / "other.db") in r.stderr and "[store] path of wsproxy.ini" in r.stderr
    (tmp_path / "wsproxy.ini").write_text("[server]\nalso_bogus = 1\n")
    r = _in_private_etc(system_ini, str(tmp_path), BIN, "--check")
    assert r.returncode == 2 and "config wsproxy.ini:2: unknown key [server] also_bogus" in r.stderr
    # none at all: the error says where it looked
    os.unlink(tmp_path / "wsproxy.ini")
    r = run("stats", cwd=str(tmp_path))
    assert r.returncode == 2
    assert "looked for ./wsproxy.ini and /etc/wsproxy/wsproxy.ini" in r.stderr, r.stderr


def test_make_run_prints_a_wsctl_command_that_works(tmp_path):
    import shutil
    from wsp import BIN, free_port
    out = subprocess.run(["make", "-n", "-C", ROOT, "run"], capture_output=True, text=True,
                         timeout=60).stdout
    lines = [ln for ln in out.splitlines() if "wsctl -c wsproxy.example.ini" in ln]
    assert len(lines) == 1, out
    cmd = lines[0].split(": ", 1)[1].rstrip('"').split()
    assert cmd[0] == "./build/wsctl" and cmd[1:3] == ["-c", "wsproxy.example.ini"], cmd
    # the same layout as the checkout: the example config, run from the directory it is in
    shutil.copy(os.path.join(ROOT, "wsproxy.example.ini"), tmp_path)
    port, api_port = free_port(), free_port()
    p = subprocess.Popen([BIN, "--config", "wsproxy.example.ini", "--listen", f"127.0.0.1:{port}",
                          "--api-listen", f"127.0.0.1:{api_port}"], cwd=str(tmp_path),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not os.path.exists(tmp_path / "var" / "wsproxy.db") and time.time() < deadline:
            time.sleep(0.05)
        import configparser
        cp = configparser.ConfigParser()
        cp.read(tmp_path / "wsproxy.example.ini")
        secret = cp["auth"]["jwt_secret"]
        ws = None
        while ws is None and time.time() < deadline:
            try:
                ws = raw_ws(port, f"/ws?token={make_token('maker', secret=secret)}")
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        r = subprocess.run([WSCTL, *cmd[1:]], capture_output=True, text=True, cwd=str(tmp_path),
                           timeout=30)
        assert r.returncode == 0, r.stderr
        head, rows = table(r.stdout)
        assert head == SESSION_COLS and rows[0][1] == "maker" and rows[0][2] == "active", r.stdout
        ws.close()
    finally:
        p.terminate()
        p.wait(timeout=10)



# ---- status, message, token, backup, did you mean ----

def test_wsctl_status_up_and_down(make_server):
    srv = make_server().start()
    wait_api(srv)
    c = Chat(srv, "alice")
    r = ok("status", srv=srv)
    st = kv(r.stdout)
    assert st["state"] == "up" and st["api"] == srv.api_url
    assert st["listen"] == f"127.0.0.1:{srv.port} (configured)"
    assert re.fullmatch(r"\d+\.\d+\.\d+", st["version"])
    assert re.fullmatch(r"\d+(ms|s) \(since \d{4}-\d\d-\d\dT[\d:]+Z\)", st["uptime"]), st["uptime"]
    assert st["websockets"] == "1" and st["users online"] == "1" and int(st["connections"]) >= 1
    j = json.loads(ok("status", "--json", srv=srv).stdout)
    assert j["state"] == "up" and j["reason"] is None and j["websockets"] == 1
    assert j["version"] == st["version"] and 0 <= j["uptime_ms"] < 60000
    # no API key needed: /healthz and /metrics are open
    assert run("status", "--api", srv.api_url, "--db", "/nonexistent").returncode == 0
    c.close()
    srv.stop()
    r = run("status", srv=srv)
    assert r.returncode == 1, r.stderr
    st = kv(r.stdout)
    assert st["state"].startswith("down (") and "refused" in st["state"]
    assert json.loads(run("status", "--json", srv=srv).stdout)["state"] == "down"


def test_wsctl_message_receipt_direct_room_and_missing(make_server):
    srv = make_server(heartbeat={"ping_interval": "0"}).start()
    wait_api(srv)
    mid = json.loads(ok("push", "--to", "bob", "--cid", "c-1", "--json", '{"n":1}', srv=srv).stdout)["id"]
    st = kv(ok("message", str(mid), srv=srv).stdout)
    assert st["state"] == "stored" and st["delivered"] == "-" and st["from"] == "system"
    assert st["to"] == "bob" and st["cid"] == "c-1" and st["body"] == '{"n":1}'
    bob = Chat(srv, "bob")
    bob.send({"type": "ack", "id": mid})
    time.sleep(0.3)
    st = kv(ok("message", str(mid), srv=srv).stdout)
    assert st["state"] == "delivered" and st["delivered by"] == f"session {bob.session}"
    assert re.match(r"\d{4}-\d\d-\d\dT", st["delivered"])
    j = json.loads(ok("message", "--json", str(mid), srv=srv).stdout)
    assert j["id"] == mid and j["state"] == "delivered" and j["delivered_by"] == bob.session
    rid = json.loads(ok("push", "--room", "ops", "--json", "x", srv=srv).stdout)["id"]
    st = kv(ok("message", str(rid), srv=srv).stdout)
    assert st["to"] == "#ops" and st["state"].startswith("stored (room messages")
    r = run("message", "999999", srv=srv)
    assert r.returncode == 1 and "not_found" in r.stderr and r.stdout == ""
    bob.close()


def test_wsctl_token_is_accepted_by_the_server_and_refused_for_asymmetric_algs(make_server, tmp_path):
    srv = make_server(heartbeat={"ping_interval": "0"}).start()
    wait_api(srv)
    tok = ok("token", "carol", "--ttl", "5m", srv=srv).stdout.strip()
    ws = raw_ws(srv.port, f"/ws?token={tok}")
    ws.close()
    j = json.loads(ok("token", "--json", "dave", srv=srv).stdout)
    assert j["user"] == "dave" and abs(j["exp"] - (time.time() + 3600)) < 5
    time.sleep(0.2)
    users = {s["user"] for s in json.loads(ok("sessions", "--json", srv=srv).stdout)["sessions"]}
    assert "carol" in users
    conf = tmp_path / "es.ini"
    conf.write_text("[auth]\njwt_alg = ES256\njwt_public_key = /etc/x.pem\n")
    r = run("--config", str(conf), "token", "alice")
    assert r.returncode == 2 and "ES256" in r.stderr and "private key" in r.stderr and r.stdout == ""
    conf.write_text("[auth]\nmode = token\n")
    r = run("--config", str(conf), "token", "alice")
    assert r.returncode == 2 and "no [auth] jwt_secret" in r.stderr


@pytest.mark.skipif(PG, reason="SQLite-specific: wsctl backup copies the .db file (PostgreSQL: pg_dump)")
def test_wsctl_backup_is_an_online_consistent_copy(make_server, tmp_path):
    srv = make_server(heartbeat={"ping_interval": "0"}).start()
    wait_api(srv)
    c = Chat(srv, "alice")
    for i in range(50):
        c.send({"type": "send", "to": "bob", "body": {"i": i}, "cid": f"b{i}"})
        c.until("sent")
    dest = tmp_path / "copy.db"
    r = ok("backup", str(dest), srv=srv)  # the server is running and holds the database open
    assert r.stdout.startswith(f"backed up {srv.db} to {dest} (")
    con = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT count(*) FROM messages").fetchone() == (50,)
    con.close()
    # the copy is a database wsctl (and the server) can use
    assert json.loads(ok("--db", str(dest), "stats", "--json").stdout)["messages"] == 50
    # never over an existing file
    r = run("backup", str(dest), srv=srv)
    assert r.returncode == 2 and "never overwrites" in r.stderr
    j = json.loads(ok("backup", "--json", str(tmp_path / "b2.db"), srv=srv).stdout)
    assert j["pages"] > 0 and j["bytes"] == os.path.getsize(tmp_path / "b2.db")
    r = run("backup", str(tmp_path / "no" / "dir.db"), srv=srv)
    assert r.returncode == 2 and "No such file" in r.stderr
    c.close()


@pytest.mark.parametrize("typo,meant", [("sesions", "sessions"), ("stat", "stats"), ("bakup", "backup"),
                                        ("mesage", "message"), ("tokn", "token"), ("pres", "presence"),
                                        ("membres", "members"), ("room", "rooms"),
                                        ("conversation", "conversations"), ("remvoe", "remove")])
def test_wsctl_did_you_mean(typo, meant):
    r = run(typo)
    assert r.returncode == 2 and f"unknown command '{typo}'; did you mean '{meant}'?" in r.stderr
    assert "did you mean" not in run("xyzzy").stderr


# ---- rooms: rooms, members, add, remove (closed rooms), conversations, kick --user ----

def test_wsctl_rooms_members_add_remove_in_closed_rooms(make_server):
    srv = make_server(rooms={"open": "lobby"}, heartbeat={"ping_interval": "0"}).start()
    wait_api(srv)
    alice = Chat(srv, "alice")
    alice.send({"type": "join", "room": "lobby"})
    alice.until("joined")
    carol = Chat(srv, "carol", extra={"rooms": ["team-*"]})
    carol.send({"type": "join", "room": "team-x"})
    carol.until("joined")
    alice.send({"type": "join", "room": "team-x"})  # closed, no claim: refused
    assert alice.until("error")["code"] == "forbidden"
    # add through the API: bob never connected; a second add changes nothing but the grant
    r = ok("add", "team-x", "bob", srv=srv)
    assert r.stdout == "bob added to room team-x\n"
    r = ok("add", "team-x", "bob", srv=srv)
    assert r.stdout == "bob was already a member of room team-x (now granted by the API)\n"
    assert json.loads(ok("add", "--json", "team-x", "carol", srv=srv).stdout)["added"] is False
    # names that need %-encoding in the path
    ok("add", "déjà vu/2", "zoé ?", srv=srv)
    alice.send({"type": "send", "room": "lobby", "body": "hi", "cid": "l1"})
    alice.until("sent")

    head, rows = table(ok("rooms", srv=srv).stdout)
    assert head == ["NAME", "OPEN", "MEMBERS", "LAST_MESSAGE"]
    by = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == sorted(by)
    assert by["lobby"][1:3] == ["yes", "1"] and by["lobby"][3] in ("just now", "1s ago", "2s ago")
    assert by["team-x"][1:] == ["no", "2", "never"]
    assert by["déjà vu/2"][1:] == ["no", "1", "never"]
    j = json.loads(ok("rooms", "--json", srv=srv).stdout)
    lobby = [x for x in j["rooms"] if x["name"] == "lobby"][0]
    assert lobby["open"] is True and lobby["members"] == 1 and lobby["last_id"] > 0
    assert abs(lobby["last_at"] - time.time() * 1000) < 10000 and j["next_after"] is None
    # paging in name order
    r = ok("rooms", "--limit", "1", srv=srv)
    assert len(table(r.stdout)[1]) == 1 and r.stderr == f"(more: --after {rows[0][0]})\n"
    j = json.loads(ok("rooms", "--json", "--limit", "1", "--after", rows[0][0], srv=srv).stdout)
    assert [x["name"] for x in j["rooms"]] == [rows[1][0]] and j["next_after"] == rows[1][0]

    head, rows = table(ok("members", "team-x", srv=srv).stdout)
    assert head == ["USER", "VIA", "STATE", "CONNECTIONS", "LAST_SEEN"]
    assert rows == [["bob", "api", "unknown", "0", "never"], ["carol", "api", "online", "1", "now"]]
    j = json.loads(ok("members", "--json", "lobby", srv=srv).stdout)
    assert j == {"room": "lobby", "members": [{"user": "alice", "via": "join", "state": "online",
                                               "connections": 1, "last_seen": j["members"][0]["last_seen"]}]}
    ok("add", "team-y", "dave", srv=srv)
    dave_claim = Chat(srv, "dave", extra={"rooms": ["team-*"]})
    dave_claim.send({"type": "join", "room": "team-z"})
    dave_claim.until("joined")
    assert table(ok("members", "team-z", srv=srv).stdout)[1][0][:3] == ["dave", "claim", "online"]
    r = run("members", "nowhere", srv=srv)
    assert r.returncode == 1 and r.stdout == "" and "room nowhere has no members" in r.stderr

    # remove: 204, then 404 said plainly
    r = ok("remove", "team-x", "bob", srv=srv)
    assert r.stdout == "bob removed from room team-x\n"
    r = run("remove", "team-x", "bob", srv=srv)
    assert r.returncode == 1 and r.stdout == "" and "bob is not a member of room team-x" in r.stderr
    r = ok("remove", "--json", "déjà vu/2", "zoé ?", srv=srv)
    assert json.loads(r.stdout) == {"room": "déjà vu/2", "user": "zoé ?", "removed": True}
    # carol, online, is told at once
    r = ok("remove", "team-x", "carol", srv=srv)
    left = carol.until("left")
    assert left["room"] == "team-x"
    # API errors: wrong key is 2
    r = run("add", "team-x", "bob", "--key", "wrong", srv=srv)
    assert r.returncode == 2 and "401" in r.stderr
    for c in (alice, carol, dave_claim):
        c.close()
    # reads work with the server down
    srv.stop()
    assert "lobby" in ok("rooms", srv=srv).stdout
    assert table(ok("members", "lobby", srv=srv).stdout)[1][0][:3] == ["alice", "join", "offline"]
    r = run("add", "lobby", "x", srv=srv)
    assert r.returncode == 2 and "cannot connect" in r.stderr


def test_wsctl_conversations(make_server):
    srv = make_server(heartbeat={"ping_interval": "0"}).start()
    wait_api(srv)
    alice, bob = Chat(srv, "alice"), Chat(srv, "bob")
    for c in (alice, bob):
        c.send({"type": "join", "room": "lobby"})
        c.until("joined")
    alice.send({"type": "send", "room": "lobby", "body": {"text": "room \x1b[31mred"}, "cid": "r1"})
    alice.until("sent")
    bob.send({"type": "send", "to": "alice", "body": "x" * 200, "cid": "d1"})
    bob.until("sent")
    ok("push", "--to", "alice", "--from", "carol", "from carol", srv=srv)
    head, rows = table(ok("conversations", "alice", srv=srv).stdout)
    assert head == ["WITH", "LAST", "ID", "FROM", "UNREAD", "PREVIEW"]
    assert [r[0] for r in rows] == ["carol", "bob", "#lobby"]
    assert rows[1][3:5] == ["bob", "1"] and rows[1][5].endswith("...") and len(rows[1][5]) == 50
    assert rows[2][3] == "alice" and "\x1b" not in rows[2][5] and "\\u001B" in rows[2][5]
    j = json.loads(ok("conversations", "--json", "alice", srv=srv).stdout)
    assert j["user"] == "alice" and j["more"] is False and j["next_before"] is None
    assert j["items"][0]["with"] == "carol" and j["items"][0]["last"]["via"] == "api"
    assert j["items"][2]["room"] == "lobby" and j["items"][2]["last"]["body"] == {"text": "room \x1b[31mred"}
    # paging
    r = ok("conversations", "alice", "--limit", "2", srv=srv)
    assert len(table(r.stdout)[1]) == 2
    second = j["items"][1]["last"]["id"]
    assert r.stderr == f"(older: --before {second})\n"
    j2 = json.loads(ok("conversations", "alice", "--json", "--before", str(second), srv=srv).stdout)
    assert [x.get("room") for x in j2["items"]] == ["lobby"]
    assert ok("conversations", "nobody", srv=srv).stdout == "no conversations\n"
    alice.close()
    bob.close()


def test_wsctl_kick_user_closes_every_live_session(make_server):
    srv = make_server(heartbeat={"ping_interval": "0"}).start()
    wait_api(srv)
    a1, a2, b = Chat(srv, "alice"), Chat(srv, "alice"), Chat(srv, "bob")
    r = ok("kick", "--user", "alice", srv=srv)
    assert r.stdout == "kicked 2 sessions of alice\n"
    for c in (a1, a2):
        with pytest.raises(EOFError) as e:
            while True:
                c.recv()
        assert e.value.args[0] == 1008
    # bob is untouched
    assert json.loads(ok("sessions", "--json", "--active", srv=srv).stdout)["sessions"][0]["user"] == "bob"
    r = run("kick", "--user", "alice", srv=srv)
    assert r.returncode == 1 and r.stdout == "" and "alice has no live session" in r.stderr
    j = json.loads(ok("kick", "--user", "bob", "--json", srv=srv).stdout)
    assert j == {"user": "bob", "kicked": [b.session]}
    s = json.loads(ok("sessions", "--json", "--user", "alice", srv=srv).stdout)["sessions"]
    assert {x["end_reason"] for x in s} == {"kicked"}
