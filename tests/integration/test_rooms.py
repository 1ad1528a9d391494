"""
test_rooms.py -- room access and what the backend controls (issue 13): closed rooms refuse
non-members with `forbidden`; a token's rooms claim or an API add lets a user in; removal stops
delivery and history at once on every device; open rooms behave as before; the conversation list;
the API marker and reserved names; multi-recipient and atomic batch pushes; message and room
deletion; and the upgrade of a database made by the first schema.
"""
import http.client
import json
import os
import sqlite3
import time

import pytest

from test_hostile import Frames, chat_socket, ws_frame
from wsp import API_KEY, PG, ROOT, SECRET, Server, make_token, raw_connect, read_http_response, \
    upgrade_request

WAIT = 10


def api(srv, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", srv.api_port, timeout=WAIT)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, (json.loads(raw) if raw else None)


class Client:
    """A chat connection with a frame reader (raw socket)."""

    def __init__(self, srv, user, token=None):
        self.srv = srv
        if token:
            import socket as so
            s = so.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
            s.sendall(upgrade_request(f"/ws?token={token}"))
            status, _, rest = read_http_response(s)
            assert status == 101, status
            self.s = s
        else:
            self.s, rest = chat_socket(srv, user)
        self.f = Frames(self.s, rest)
        self.welcome = self.until(lambda m: m["type"] == "welcome")
        self.until(lambda m: m["type"] == "replayed")
        self.n = 0

    def send(self, **m):
        self.s.sendall(ws_frame(1, json.dumps(m).encode()))

    def until(self, pred, timeout=WAIT):
        return self.f.json_until(pred, timeout)

    def ask(self, **m):
        self.n += 1
        rid = f"r{self.n}"
        self.send(rid=rid, **m)
        return self.until(lambda x: x.get("rid") == rid)

    def join(self, room):
        self.send(type="join", room=room)
        return self.until(lambda m: (m["type"] == "joined" and m["room"] == room) or
                          m["type"] == "error")

    def dm(self, to, body, cid):
        self.send(type="send", to=to, body=body, cid=cid)
        return self.until(lambda m: m.get("cid") == cid and m["type"] in ("sent", "error"))

    def say(self, room, body, cid):
        self.send(type="send", room=room, body=body, cid=cid)
        return self.until(lambda m: m.get("cid") == cid and m["type"] in ("sent", "error"))

    def close(self):
        self.s.close()


@pytest.fixture
def srv(tmp_path):
    s = Server(str(tmp_path), rooms={"open": "lobby, public-*"}).start()
    yield s
    s.stop()


def test_closed_room_refuses_non_members(srv):
    mallory = Client(srv, "mallory")
    e = mallory.join("team")
    assert e["type"] == "error" and e["code"] == "forbidden", e
    e = mallory.say("team", "hi", "c1")
    assert e["type"] == "error" and e["code"] == "forbidden", e
    e = mallory.ask(type="history", room="team")
    assert e["type"] == "error" and e["code"] == "forbidden", e
    e = mallory.ask(type="members", room="team")
    assert e["type"] == "error" and e["code"] == "forbidden", e
    # open rooms behave as before: join freely, not_member before joining
    e = mallory.say("public-news", "hi", "c2")
    assert e["code"] == "not_member"
    assert mallory.join("public-news")["type"] == "joined"
    assert mallory.join("lobby")["type"] == "joined"
    assert mallory.say("lobby", "hello", "c3")["type"] == "sent"
    mallory.close()


def test_token_claim_allows_join_and_refresh_revokes(srv):
    tok = make_token("alice", extra={"rooms": ["team-*", "ops"]})
    alice = Client(srv, "alice", token=tok)
    assert alice.join("team-red")["type"] == "joined"
    assert alice.join("ops")["type"] == "joined"
    assert alice.join("other")["code"] == "forbidden"
    # a refreshed token without ops: that membership ends on every device
    alice.send(type="refresh", token=make_token("alice", extra={"rooms": ["team-*"]}))
    left = alice.until(lambda m: m["type"] == "left")
    assert left["room"] == "ops" and left["reason"] == "revoked"
    alice.until(lambda m: m["type"] == "refreshed")
    assert alice.say("ops", "x", "c1")["code"] == "forbidden"
    assert alice.say("team-red", "x", "c2")["type"] == "sent"
    # a malformed claim is refused at the handshake
    s = raw_connect(srv.port)
    s.sendall(upgrade_request(f"/ws?token={make_token('bob', extra={'rooms': 'team-*'})}"))
    assert read_http_response(s)[0] == 401
    s.close()
    alice.close()


def test_api_add_and_remove_member_every_device(srv):
    phone, laptop = Client(srv, "bob"), Client(srv, "bob")
    carol = Client(srv, "carol")
    st, j = api(srv, "POST", "/api/v1/rooms/team/members", {"user": "carol"})
    assert st == 200 and j == {"room": "team", "user": "carol", "added": True}
    carol.until(lambda m: m["type"] == "joined" and m["reason"] == "added")
    st, j = api(srv, "POST", "/api/v1/rooms/team/members", {"user": "bob"})
    assert st == 200 and j["added"] is True
    for dev in (phone, laptop):
        assert dev.until(lambda m: m["type"] == "joined")["reason"] == "added"
    # idempotent
    assert api(srv, "POST", "/api/v1/rooms/team/members", {"user": "bob"})[1]["added"] is False
    assert carol.say("team", "one", "c1")["type"] == "sent"
    for dev in (phone, laptop):
        assert dev.until(lambda m: m["type"] == "msg")["body"] == "one"
    st, j = api(srv, "GET", "/api/v1/rooms/team/members")
    assert st == 200 and sorted(m["user"] for m in j["members"]) == ["bob", "carol"]
    assert {m["user"]: m["connections"] for m in j["members"]} == {"bob": 2, "carol": 1}
    st, j = api(srv, "GET", "/api/v1/rooms")
    team = [r for r in j["rooms"] if r["name"] == "team"][0]
    assert team["members"] == 2 and team["live"] == 3 and team["open"] is False
    # removal: at once, on every device, no more delivery, no more history
    assert api(srv, "DELETE", "/api/v1/rooms/team/members/bob")[0] == 204
    for dev in (phone, laptop):
        left = dev.until(lambda m: m["type"] == "left")
        assert left["room"] == "team" and left["reason"] == "removed"
    assert carol.say("team", "two", "c2")["type"] == "sent"
    assert phone.ask(type="history", room="team")["code"] == "forbidden"
    phone.send(type="presence", users=["carol"], rid="sync")
    got = phone.until(lambda m: m.get("rid") == "sync" or m.get("type") == "msg")
    assert got.get("rid") == "sync", f"a removed member still got {got}"
    assert api(srv, "DELETE", "/api/v1/rooms/team/members/bob")[0] == 404
    for c in (phone, laptop, carol):
        c.close()


def test_room_delete_and_message_delete(srv):
    carol = Client(srv, "carol")
    api(srv, "POST", "/api/v1/rooms/gone/members", {"user": "carol"})
    carol.until(lambda m: m["type"] == "joined")
    sent = carol.say("gone", "secret", "c1")
    # message delete: live holders told, gone from history, the id not reused
    st, _ = api(srv, "DELETE", f"/api/v1/messages/{sent['id']}")
    assert st == 204
    assert carol.until(lambda m: m["type"] == "deleted")["id"] == sent["id"]
    assert carol.ask(type="history", room="gone")["items"] == []
    assert api(srv, "DELETE", f"/api/v1/messages/{sent['id']}")[0] == 404
    nxt = carol.say("gone", "next", "c2")
    assert nxt["id"] > sent["id"]
    # room delete: everyone leaves, the room is gone
    assert api(srv, "DELETE", "/api/v1/rooms/gone")[0] == 204
    assert carol.until(lambda m: m["type"] == "left")["reason"] == "deleted"
    assert carol.say("gone", "x", "c3")["code"] == "forbidden"
    assert api(srv, "DELETE", "/api/v1/rooms/gone")[0] == 404
    carol.close()


def test_conversation_list(srv):
    alice = Client(srv, "alice")
    bob = Client(srv, "bob")
    assert alice.join("lobby")["type"] == "joined"
    assert bob.join("lobby")["type"] == "joined"
    alice.say("lobby", "room first", "c1")
    bob.dm("alice", {"text": "hi alice, " + "x" * 300}, "d1")
    bob.dm("alice", "second", "d2")
    api(srv, "POST", "/api/v1/push", {"to": "alice", "body": {"text": "Your order shipped"}})
    conv = alice.ask(type="conversations")
    items = conv["items"]
    assert [i.get("with") or i.get("room") for i in items] == ["system", "bob", "lobby"]
    sysmsg, withbob, lobby = items
    assert sysmsg["last"]["preview"] == "Your order shipped" and sysmsg["last"]["via"] == "api"
    assert withbob["last"]["preview"] == "second" and withbob["unread"] == 2
    assert lobby["unread"] == 0  # her own message
    assert conv["more"] is False
    # bob's view: the lobby has one unread (alice's), his DMs none
    st, j = api(srv, "GET", "/api/v1/users/bob/conversations")
    assert st == 200
    by = {i.get("with") or i.get("room"): i for i in j["items"]}
    assert by["lobby"]["unread"] == 1 and by["alice"]["unread"] == 0
    # paging
    first = alice.ask(type="conversations", limit=1)
    assert len(first["items"]) == 1 and first["more"] is True
    rest = alice.ask(type="conversations", limit=10, before=first["next_before"])
    assert [i.get("with") or i.get("room") for i in rest["items"]] == ["bob", "lobby"]
    # acks clear the unread count
    st, j = api(srv, "GET", "/api/v1/history?with=bob&user=alice")
    for it in j["items"]:
        alice.send(type="ack", id=it["id"])
    deadline = time.time() + WAIT
    while alice.ask(type="conversations")["items"][1]["unread"] != 0:
        assert time.time() < deadline
    alice.close()
    bob.close()


def test_api_marker_cannot_be_forged_and_reserved_names(srv):
    alice = Client(srv, "alice")
    bob = Client(srv, "bob")
    bob.send(type="send", to="alice", body="fake", cid="f1", via="api")
    m = alice.until(lambda m: m["type"] == "msg")
    assert "via" not in m  # a client cannot set the marker
    api(srv, "POST", "/api/v1/push", {"to": "alice", "body": "real"})
    assert alice.until(lambda m: m["type"] == "msg")["via"] == "api"
    s = raw_connect(srv.port)
    s.sendall(upgrade_request(f"/ws?token={make_token('system')}"))
    status, _, body = read_http_response(s)
    assert status == 401
    s.close()
    alice.close()
    bob.close()


def test_multi_recipient_and_atomic_batch(srv):
    st, j = api(srv, "POST", "/api/v1/push", {"to": ["u1", "u2", "u3"], "body": "all", "cid": "m"})
    assert st == 202 and [r["to"] for r in j["results"]] == ["u1", "u2", "u3"]
    assert [r["cid"] for r in j["results"]] == ["m/u1", "m/u2", "m/u3"]
    again = api(srv, "POST", "/api/v1/push", {"to": ["u1", "u2", "u3"], "body": "all", "cid": "m"})
    assert all(r["duplicate"] for r in again[1]["results"])
    st, j = api(srv, "POST", "/api/v1/push", {"to": [f"u{i}" for i in range(101)], "body": 1})
    assert st == 400
    before = srv.db_rows("SELECT count(*) FROM messages")[0][0]
    st, j = api(srv, "POST", "/api/v1/push/batch", {"pushes": [
        {"to": "a", "body": 1, "cid": "b1"}, {"room": "lobby", "body": 2}, {"to": "", "body": 3}]})
    assert st == 400 and "push 2" in j["error"]["message"]
    assert srv.db_rows("SELECT count(*) FROM messages")[0][0] == before  # nothing of it stored
    st, j = api(srv, "POST", "/api/v1/push/batch", {"pushes": [
        {"to": "a", "body": 1, "cid": "b1"}, {"room": "lobby", "body": 2, "from": "shop"}]})
    assert st == 202 and len(j["results"]) == 2 and j["results"][1]["room"] == "lobby"
    assert srv.db_rows("SELECT count(*) FROM messages")[0][0] == before + 2


@pytest.mark.skipif(PG, reason="SQLite-specific: migrates a schema-1 .db file (PostgreSQL starts at 5)")
def test_upgrade_from_first_schema_keeps_data(tmp_path):
    db = str(tmp_path / "old.db")
    con = sqlite3.connect(db)
    con.executescript(open(os.path.join(ROOT, "migrations", "0001_initial.sql")).read())
    con.execute("PRAGMA user_version = 1")
    con.execute("INSERT INTO room_members (room, user, joined_at, cursor) VALUES ('team', 'bob', 1, 0)")
    con.execute("INSERT INTO messages (sender, room, body, created_at, cid) VALUES "
                "('bob', 'team', '\"old room\"', 2, 'o1')")
    con.execute("INSERT INTO messages (sender, to_user, body, created_at, cid) VALUES "
                "('carol', 'bob', '\"old dm\"', 3, 'o2')")
    con.commit()
    con.close()
    srv = Server(str(tmp_path), store={"path": db}).start()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 2
        con.close()
        bob = Client(srv, "bob")
        assert bob.welcome["rooms"] == ["team"]  # a member before: still a member (closed room)
        h = bob.ask(type="history", room="team")
        assert [i["body"] for i in h["items"]] == ["old room"]
        conv = bob.ask(type="conversations")["items"]
        assert [i.get("with") or i.get("room") for i in conv] == ["carol", "team"]
        assert conv[0]["unread"] == 1
        nxt = bob.say("team", "new", "n1")
        assert nxt["id"] > 2
        bob.close()
    finally:
        srv.stop()


def test_sender_told_when_a_direct_message_is_delivered(srv):
    alice, bob = Client(srv, "alice"), Client(srv, "bob")
    sent = alice.dm("bob", "are you there?", "q1")
    m = bob.until(lambda m: m["type"] == "msg")
    bob.send(type="ack", id=m["id"])
    d = alice.until(lambda m: m["type"] == "delivered")
    assert d["id"] == sent["id"] and d["to"] == "bob" and d["cid"] == "q1"
    bob.send(type="ack", id=m["id"])  # a second ack delivers nothing new: no second receipt
    assert alice.ask(type="presence", users=["bob"])["type"] == "presence"
    alice.close()
    bob.close()
