"""
test_retention.py -- [store] retention_count and retention_age delete old messages on a timer (they
leave history, new ids keep growing, the server keeps answering, /metrics counts them), and
DELETE /api/v1/users/USER erases a user: tombstones, rows gone, live connections closed with 1008.
"""
import struct
import time
import urllib.request

from test_rooms import WAIT, Client, api
from wsp import API_KEY, Server


def wait_for(pred, timeout=WAIT):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.1)


def metric(srv, name):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.api_port}/metrics",
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    for line in urllib.request.urlopen(req, timeout=WAIT).read().decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def history(srv, query):
    st, j = api(srv, "GET", f"/api/v1/history?{query}")
    assert st == 200, j
    return [i["id"] for i in j["items"]]


def test_retention_count_keeps_the_newest(tmp_path):
    srv = Server(str(tmp_path), store={"retention_count": "3"}).start()
    try:
        alice = Client(srv, "alice")
        assert alice.join("lobby")["type"] == "joined"
        room_ids = [alice.say("lobby", f"r{i}", f"c{i}")["id"] for i in range(8)]
        dm_ids = [alice.dm("bob", f"d{i}", f"d{i}")["id"] for i in range(6)]
        wait_for(lambda: len(history(srv, "room=lobby")) == 3)
        wait_for(lambda: len(history(srv, "with=bob&user=alice")) == 3)
        assert history(srv, "room=lobby") == room_ids[:-4:-1]
        assert history(srv, "with=bob&user=alice") == dm_ids[:-4:-1]
        assert alice.ask(type="history", room="lobby")["items"][0]["id"] == room_ids[-1]
        # new ids keep growing, and the counts follow the new messages
        nxt = alice.say("lobby", "new", "c-new")
        assert nxt["id"] > dm_ids[-1]
        wait_for(lambda: history(srv, "room=lobby") == [nxt["id"]] + room_ids[:-3:-1])
        # The counter moves when the loop has the COMMIT's answer; on PostgreSQL another session
        # (the API's read) can see the deletion a moment before that (CI once read 1 of 2 here).
        wait_for(lambda: metric(srv, "wsproxy_retention_deleted_total") == 5 + 3 + 1)
        alice.close()
    finally:
        srv.stop()


def test_retention_age_and_a_conversation_with_nothing_left(tmp_path):
    srv = Server(str(tmp_path), store={"retention_age": "1s"}).start()
    try:
        alice = Client(srv, "alice")
        old = alice.dm("bob", "old", "d1")["id"]
        assert alice.join("lobby")["type"] == "joined"
        time.sleep(1.2)
        fresh = alice.say("lobby", "fresh", "c1")["id"]
        # the old message goes; the fresh one is the newest overall, kept whatever its age
        wait_for(lambda: history(srv, "with=bob&user=alice") == [])
        conv = alice.ask(type="conversations")["items"]
        by = {i.get("with") or i.get("room"): i for i in conv}
        assert by["bob"]["last"] == {"id": old, "gone": True}
        time.sleep(1.5)
        assert history(srv, "room=lobby") == [fresh]
        nxt = alice.say("lobby", "next", "c2")["id"]
        assert nxt == fresh + 1
        wait_for(lambda: history(srv, "room=lobby") == [nxt])
        # the counter follows the COMMIT's answer, which can come just after the deletion is visible
        wait_for(lambda: metric(srv, "wsproxy_retention_deleted_total") == 2)
        assert metric(srv, "wsproxy_retention_deleted_total") == 2
        assert api(srv, "GET", "/api/v1/users/alice/conversations")[0] == 200
        alice.close()
    finally:
        srv.stop()


def close_code(client):
    deadline = time.time() + WAIT
    while time.time() < deadline:
        op, p = client.f.next()
        if op == 8:
            return struct.unpack("!H", p[:2])[0], p[2:].decode()
    raise AssertionError("no close frame")


def test_user_erase(tmp_path):
    srv = Server(str(tmp_path)).start()
    try:
        alice = Client(srv, "alice")
        alice2 = Client(srv, "alice")
        bob = Client(srv, "bob")
        carol = Client(srv, "carol")
        for c in (alice, carol):
            assert c.join("lobby")["type"] == "joined"
        to_bob = alice.dm("bob", "secret", "d1")["id"]
        from_bob = bob.dm("alice", "reply", "d2")["id"]
        mine = alice.say("lobby", "mine", "c1")["id"]
        theirs = carol.say("lobby", "theirs", "c2")["id"]
        bob.dm("carol", "stays", "d3")

        assert api(srv, "DELETE", "/api/v1/users/alice")[0] == 204
        assert close_code(alice) == (1008, "kicked")
        assert close_code(alice2) == (1008, "kicked")
        assert carol.until(lambda m: m["type"] == "member")["event"] == "left"
        # tombstones: gone from history, the ids stay taken
        assert history(srv, "with=alice&user=bob") == []
        assert history(srv, "room=lobby") == [theirs]
        for mid in (to_bob, from_bob, mine):
            st, j = api(srv, "GET", f"/api/v1/messages/{mid}")
            assert st == 200 and j.get("deleted") is True, j
        st, j = api(srv, "GET", "/api/v1/users/bob/conversations")
        assert [i.get("with") or i.get("room") for i in j["items"]] == ["carol"]
        # the server keeps answering; rows stay gone after the connections' ends
        assert carol.say("lobby", "after", "c3")["id"] > theirs
        time.sleep(0.5)
        for table, col in (("sessions", "user"), ("presence", "user"), ("room_members", "user"),
                           ("dm_conversations", "user"), ("dm_conversations", "peer")):
            n = srv.db_rows(f"SELECT count(*) FROM {table} WHERE {col} = 'alice'")[0][0]
            assert n == 0, table
        # idempotent; a new connection of that name starts afresh
        assert api(srv, "DELETE", "/api/v1/users/alice")[0] == 204
        again = Client(srv, "alice")
        assert again.welcome["rooms"] == []
        assert api(srv, "GET", "/api/v1/users/alice")[0] == 405
        assert api(srv, "DELETE", "/api/v1/users/%00")[0] == 400
        for c in (again, bob, carol):
            c.close()
    finally:
        srv.stop()
