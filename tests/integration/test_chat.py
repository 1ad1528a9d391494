"""
test_chat.py -- issue 3 end to end: the chat protocol on /ws against the real binary with
python3-websockets clients: live and offline delivery, acks, rooms, history, presence, idempotent
sends, durability across kill -9, bad frames and token expiry.
"""
import asyncio
import json
import time

import pytest
import websockets

from wsp import Server, make_token

WAIT = 5  # seconds: the bound of every single wait on the server
QUIET = 0.4  # how long "nothing arrives" is watched for


def run(coro):
    """Run one test coroutine with an overall bound, so a hang fails instead of blocking."""
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def srv(tmp_path):
    s = Server(str(tmp_path)).start()
    yield s
    s.stop()


@pytest.fixture
def start_server(tmp_path):
    """Factory for a server with extra config sections; each one is stopped after the test."""
    made = []

    def factory(**sections):
        d = tmp_path / f"s{len(made)}"
        d.mkdir()
        s = Server(str(d), **sections).start()
        made.append(s)
        return s

    yield factory
    for s in made:
        s.stop()


class Chat:
    """One chat connection: JSON in and out, every receive bounded by WAIT."""

    def __init__(self, ws):
        self.ws = ws
        self.welcome = None
        self.replay = []  # every frame between welcome and replayed
        self.seq = 0

    async def send(self, **frame):
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, data):
        await self.ws.send(data)

    async def recv(self, timeout=WAIT):
        # Room membership events ("member", tested in test_room_events.py) are not what these
        # tests are about: drop them so every assertion here still sees the exact frame sequence.
        while True:
            f = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if f.get("type") != "member":
                return f

    async def expect(self, type_, skip=(), timeout=WAIT):
        """The next frame, which must be of type_; frames whose type is in skip are dropped."""
        while True:
            f = await self.recv(timeout)
            if f.get("type") in skip:
                continue
            assert f.get("type") == type_, f"expected {type_}, got {f}"
            return f

    async def sync(self):
        """
        Round trip through the server (a presence query with a fresh rid). Returns the frames that
        arrived before its answer: everything the server queued for us before it read the query.
        """
        self.seq += 1
        rid = f"sync{self.seq}"
        await self.send(type="presence", users=["nobody-sync"], rid=rid)
        before = []
        while True:
            f = await self.recv()
            if f.get("type") == "presence" and f.get("rid") == rid:
                return before
            before.append(f)

    async def quiet(self, seconds=QUIET):
        """Assert that nothing arrives for a while."""
        try:
            f = await asyncio.wait_for(self.ws.recv(), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected frame {f}")

    async def dm(self, to, body, cid, skip=("presence",)):
        """Send a direct message and return its receipt (presence events on the way are dropped)."""
        await self.send(type="send", to=to, body=body, cid=cid)
        r = await self.expect("sent", skip=skip)
        assert r["cid"] == cid, r
        return r

    async def post(self, room, body, cid, skip=("presence",)):
        await self.send(type="send", room=room, body=body, cid=cid)
        r = await self.expect("sent", skip=skip)
        assert r["cid"] == cid, r
        return r

    async def join(self, room):
        await self.send(type="join", room=room)
        assert await self.expect("joined", skip=("presence",)) == {"type": "joined", "room": room}

    async def ack(self, *ids):
        for i in ids:
            await self.send(type="ack", id=i)
        # acks have no answer: the round trip proves they were read (and committed before it)
        assert await self.sync() == []

    async def close(self):
        await asyncio.wait_for(self.ws.close(), WAIT)


async def connect(srv, user, url=None, **token_kw):
    """Open a chat connection; check welcome, then collect the replay up to 'replayed'."""
    ws = await asyncio.wait_for(websockets.connect(url or srv.chat_url(user, **token_kw)), WAIT)
    c = Chat(ws)
    c.welcome = await c.recv()
    assert c.welcome["type"] == "welcome", c.welcome
    assert c.welcome["user"] == user
    assert isinstance(c.welcome["session"], str) and int(c.welcome["session"]) > 0
    assert c.welcome["ping_interval"] == 25
    while True:
        f = await c.recv()
        if f["type"] == "replayed":
            assert f == {"type": "replayed"}
            return c
        c.replay.append(f)


def count(srv, sql, args=()):
    return srv.db_rows(sql, args)[0][0]


def delivery_state(srv):
    """{msg id: (delivered_at, delivered_by)} of direct messages, wherever the schema keeps it."""
    tables = {r[0] for r in srv.db_rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
    src = "deliveries" if "deliveries" in tables else "messages WHERE to_user IS NOT NULL"
    key = "msg_id" if "deliveries" in tables else "id"
    return {r[0]: (r[1], r[2])
            for r in srv.db_rows(f"SELECT {key}, delivered_at, delivered_by FROM {src}")}


async def wait_session_ended(srv, session):
    """
    Wait for the session row to end and return its end_reason. The server ends the row in the
    transaction that also queues the user's presence event.
    """
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        rows = srv.db_rows("SELECT ended_at, end_reason FROM sessions WHERE id = ?",
                           (int(session),))
        if rows[0][0]:
            return rows[0][1]
        await asyncio.sleep(0.02)
    raise AssertionError(f"session {session} did not end")


# ---- direct messages ----


def test_chat_live_dm_reaches_recipient_and_senders_other_devices(srv):
    async def body():
        bob = await connect(srv, "bob")
        alice1 = await connect(srv, "alice")
        alice2 = await connect(srv, "alice")
        assert bob.replay == [] and alice1.replay == [] and alice2.replay == []

        payload = {"text": "hi bob", "n": [1, 2.5, None], "ok": True}
        sent = await alice1.dm("bob", payload, "c1")
        assert set(sent) == {"type", "cid", "id", "ts"}
        assert isinstance(sent["id"], int) and sent["id"] > 0
        assert abs(sent["ts"] - time.time() * 1000) < 60_000

        want = {"type": "msg", "id": sent["id"], "from": "alice", "to": "bob", "body": payload,
                "ts": sent["ts"], "cid": "c1"}
        assert await bob.recv() == want
        assert await alice2.recv() == want  # the sender's other device
        assert await alice1.sync() == []  # the sending connection gets only the receipt
        assert await bob.sync() == [] and await alice2.sync() == []

        # bob's reply comes back to alice on both devices
        back = await bob.dm("alice", "hello", "b1")
        for a in (alice1, alice2):
            f = await a.recv()
            assert f["id"] == back["id"] and f["from"] == "bob" and f["to"] == "alice", f
            assert f["body"] == "hello" and "replay" not in f
        assert back["id"] > sent["id"]
        for c in (bob, alice1, alice2):
            await c.close()

    run(body())


def test_chat_dm_without_cid_gets_null_cid_receipt(srv):
    async def body():
        alice = await connect(srv, "alice")
        await alice.send(type="send", to="bob", body=1)
        r = await alice.expect("sent")
        assert r["cid"] is None and r["id"] > 0
        bob = await connect(srv, "bob")
        assert len(bob.replay) == 1 and "cid" not in bob.replay[0]
        await alice.close()
        await bob.close()

    run(body())


def test_chat_offline_dm_delivered_once_after_ack(srv):
    async def body():
        alice = await connect(srv, "alice")
        receipts = [await alice.dm("bob", {"n": i}, f"c{i}") for i in range(4)]
        ids = [r["id"] for r in receipts]
        assert ids == sorted(ids) and len(set(ids)) == 4

        bob = await connect(srv, "bob")
        assert [f["id"] for f in bob.replay] == ids  # id order, between welcome and replayed
        for f, r, i in zip(bob.replay, receipts, range(4)):
            assert f == {"type": "msg", "id": r["id"], "from": "alice", "to": "bob",
                         "body": {"n": i}, "ts": r["ts"], "cid": f"c{i}", "replay": True}
        await bob.ack(*ids)
        await bob.close()
        state = delivery_state(srv)
        assert sorted(state) == ids and all(at for at, _ in state.values())
        assert {by for _, by in state.values()} == {int(bob.welcome["session"])}

        bob = await connect(srv, "bob")
        assert bob.replay == []  # acked: never again
        await bob.close()
        await alice.close()

    run(body())


def test_chat_unacked_dm_replayed_on_every_connection_until_acked(srv):
    async def body():
        alice = await connect(srv, "alice")
        first = await alice.dm("bob", "one", "u1")

        bob = await connect(srv, "bob")
        assert [f["id"] for f in bob.replay] == [first["id"]]
        await bob.close()  # no ack

        bob = await connect(srv, "bob")
        assert [f["id"] for f in bob.replay] == [first["id"]]
        # a message received live but not acked is pending as well
        second = await alice.dm("bob", "two", "u2")
        live = await bob.recv()
        assert live["id"] == second["id"] and "replay" not in live
        await bob.close()

        bob = await connect(srv, "bob")
        assert [f["id"] for f in bob.replay] == [first["id"], second["id"]]
        await bob.ack(second["id"])  # acks are per message, in any order
        await bob.close()

        bob = await connect(srv, "bob")
        assert [f["id"] for f in bob.replay] == [first["id"]]
        await bob.ack(first["id"], first["id"])  # a second ack is harmless
        await bob.close()

        bob = await connect(srv, "bob")
        assert bob.replay == []
        await bob.close()
        await alice.close()

    run(body())


def test_chat_ack_of_someone_elses_message_is_refused(srv):
    async def body():
        alice = await connect(srv, "alice")
        m = await alice.dm("bob", "for bob", "x1")
        carol = await connect(srv, "carol")
        await carol.send(type="ack", id=m["id"])
        e = await carol.expect("error")
        assert e["code"] == "bad_request"
        await carol.send(type="ack", id=m["id"] + 1000)
        assert (await carol.expect("error"))["code"] == "bad_request"
        bob = await connect(srv, "bob")
        assert [f["id"] for f in bob.replay] == [m["id"]]  # still pending for bob
        for c in (alice, bob, carol):
            await c.close()

    run(body())


# ---- rooms ----


def test_chat_room_send_requires_membership(srv):
    async def body():
        alice = await connect(srv, "alice")
        bob = await connect(srv, "bob")
        await alice.send(type="send", room="lobby", body="early", cid="r0")
        e = await alice.expect("error")
        assert e["code"] == "not_member" and e["cid"] == "r0", e
        assert count(srv, "SELECT count(*) FROM messages") == 0

        await alice.join("lobby")
        await bob.join("lobby")
        await alice.join("lobby")  # joining twice is fine
        sent = await alice.post("lobby", {"t": "hello room"}, "r1")
        f = await bob.expect("msg", skip=("presence",))
        assert f == {"type": "msg", "id": sent["id"], "from": "alice", "room": "lobby",
                     "body": {"t": "hello room"}, "ts": sent["ts"], "cid": "r1"}
        assert [x for x in await alice.sync() if x["type"] != "presence"] == []  # no echo
        assert count(srv, "SELECT count(*) FROM messages") == 1
        await alice.close()
        await bob.close()

    run(body())


def test_chat_room_reaches_members_other_devices_and_not_outsiders(srv):
    async def body():
        alice1 = await connect(srv, "alice")
        alice2 = await connect(srv, "alice")
        carol = await connect(srv, "carol")
        await alice1.join("lobby")  # membership applies to every live device of alice
        sent = await alice1.post("lobby", "x", "m1")
        # alice's other device is told it is in the room, then gets the room's messages
        assert await alice2.recv() == {"type": "joined", "room": "lobby"}
        f = await alice2.recv()
        assert f["id"] == sent["id"] and f["room"] == "lobby"
        assert await carol.sync() == []
        for c in (alice1, alice2, carol):
            await c.close()

    run(body())


def test_chat_room_replay_after_cursor(srv):
    async def body():
        alice = await connect(srv, "alice")
        bob = await connect(srv, "bob")
        await alice.join("lobby")
        await bob.join("lobby")
        m1 = await alice.post("lobby", "one", "l1")
        assert (await bob.expect("msg", skip=("presence",)))["id"] == m1["id"]
        await bob.ack(m1["id"])
        await bob.close()
        assert srv.db_rows("SELECT cursor FROM room_members WHERE room='lobby' AND user='bob'") \
            == [(m1["id"],)]

        m2 = await alice.post("lobby", "two", "l2")
        m3 = await alice.post("lobby", "three", "l3")
        bob = await connect(srv, "bob")
        assert bob.welcome["rooms"] == ["lobby"]  # the rooms, for a client on a new device
        assert bob.replay == [
            {"type": "msg", "id": m["id"], "from": "alice", "room": "lobby", "body": b,
             "ts": m["ts"], "cid": c, "replay": True}
            for m, b, c in ((m2, "two", "l2"), (m3, "three", "l3"))]
        # the membership is live again after reconnect, without a new join
        m4 = await alice.post("lobby", "four", "l4")
        assert (await bob.expect("msg", skip=("presence",)))["id"] == m4["id"]
        await bob.close()  # nothing acked: the cursor has not moved

        bob = await connect(srv, "bob")
        assert [f["id"] for f in bob.replay] == [m2["id"], m3["id"], m4["id"]]
        await bob.ack(m3["id"])  # the cursor moves to >= 3: 2 is covered too
        await bob.close()
        bob = await connect(srv, "bob")
        assert [f["id"] for f in bob.replay] == [m4["id"]]
        await bob.ack(m4["id"])
        await bob.ack(m2["id"])  # an older ack never moves the cursor back
        await bob.close()
        bob = await connect(srv, "bob")
        assert bob.replay == []
        await bob.close()
        await alice.close()

    run(body())


def test_chat_welcome_lists_rooms_in_name_order(srv):
    async def body():
        alice = await connect(srv, "alice")
        assert alice.welcome["rooms"] == []
        for room in ("zeta", "alpha", "mid"):
            await alice.join(room)
        await alice.send(type="leave", room="mid")
        await alice.expect("left")
        await alice.close()
        alice = await connect(srv, "alice")
        assert alice.welcome["rooms"] == ["alpha", "zeta"]
        await alice.close()

    run(body())


def test_chat_room_new_member_gets_no_backlog(srv):
    async def body():
        alice = await connect(srv, "alice")
        await alice.join("lobby")
        await alice.post("lobby", "old", "o1")
        bob = await connect(srv, "bob")
        await bob.join("lobby")
        await bob.close()
        bob = await connect(srv, "bob")
        assert bob.replay == []
        await bob.close()
        await alice.close()

    run(body())


def test_chat_room_replay_truncated_at_max_replay(start_server):
    srv = start_server(store={"max_replay": "3"})

    async def body():
        alice = await connect(srv, "alice")
        bob = await connect(srv, "bob")
        await alice.join("lobby")
        await bob.join("lobby")
        await bob.close()
        ids = [(await alice.post("lobby", i, f"t{i}"))["id"] for i in range(5)]
        # a direct message is not bounded by max_replay and comes before the rooms
        dm = await alice.dm("bob", "direct", "d1")

        bob = await connect(srv, "bob")
        assert [f["type"] for f in bob.replay] == ["msg", "msg", "msg", "msg", "truncated"]
        assert bob.replay[0]["id"] == dm["id"] and bob.replay[0]["to"] == "bob"
        assert [f["id"] for f in bob.replay[1:4]] == ids[2:]  # the 3 newest, in id order
        assert [f["body"] for f in bob.replay[1:4]] == [2, 3, 4]
        assert bob.replay[4] == {"type": "truncated", "room": "lobby"}
        # the rest is reachable through history, paging before the first replayed id
        await bob.send(type="history", room="lobby", before=ids[2], limit=100, rid="h")
        h = await bob.expect("history")
        assert [i["id"] for i in h["items"]] == [ids[1], ids[0]] and h["more"] is False
        await bob.close()
        await alice.close()

    run(body())


LIVE = ("presence", "msg")  # while both sides write, the other side's messages arrive too


def test_chat_history_room_paging(srv):
    async def body():
        alice = await connect(srv, "alice")
        bob = await connect(srv, "bob")
        await alice.join("lobby")
        await bob.join("lobby")
        await alice.join("other")
        ids = []
        for i in range(7):
            c = alice if i % 2 == 0 else bob
            ids.append((await c.post("lobby", {"i": i}, f"h{i}", skip=LIVE))["id"])
        await alice.post("other", "elsewhere", "o1", skip=LIVE)

        await alice.send(type="history", room="lobby", limit=3, rid="p1")
        h = await alice.expect("history")
        assert h["rid"] == "p1" and h["room"] == "lobby" and h["more"] is True
        assert [i["id"] for i in h["items"]] == ids[::-1][:3]  # newest first
        item = h["items"][0]
        assert item == {"id": ids[6], "from": "alice", "room": "lobby", "body": {"i": 6},
                        "ts": item["ts"], "cid": "h6"}  # a msg without "type" (and no replay)
        await alice.send(type="history", room="lobby", limit=3, before=h["items"][-1]["id"],
                         rid="p2")
        h = await alice.expect("history")
        assert [i["id"] for i in h["items"]] == ids[::-1][3:6] and h["more"] is True
        await alice.send(type="history", room="lobby", limit=3, before=h["items"][-1]["id"],
                         rid="p3")
        h = await alice.expect("history")
        assert [i["id"] for i in h["items"]] == [ids[0]] and h["more"] is False
        assert h["items"][0]["from"] == "alice"

        # default limit, and exactly limit left: more is false
        await alice.send(type="history", room="lobby")
        h = await alice.expect("history")
        assert "rid" not in h and [i["id"] for i in h["items"]] == ids[::-1]
        assert h["more"] is False
        await alice.send(type="history", room="lobby", limit=7, rid="all")
        assert (await alice.expect("history"))["more"] is False

        # a non-member cannot read the room
        carol = await connect(srv, "carol")
        await carol.send(type="history", room="lobby", rid="c1")
        e = await carol.expect("error")
        assert e["code"] == "not_member" and e["rid"] == "c1"
        for c in (alice, bob, carol):
            await c.close()

    run(body())


def test_chat_history_direct_paging(srv):
    async def body():
        alice = await connect(srv, "alice")
        bob = await connect(srv, "bob")
        ids = []
        for i in range(5):
            src, dst = (alice, "bob") if i % 2 == 0 else (bob, "alice")
            ids.append((await src.dm(dst, i, f"d{i}", skip=LIVE))["id"])
        await alice.dm("carol", "not in this conversation", "x", skip=LIVE)
        await bob.dm("bob", "note to self", "self", skip=LIVE)  # nor are bob's notes to himself

        for me, other in ((alice, "bob"), (bob, "alice")):
            await me.send(type="history", **{"with": other}, limit=2, rid="a")
            h = await me.expect("history", skip=("msg",))
            assert h["rid"] == "a" and h["with"] == other
            assert [i["id"] for i in h["items"]] == [ids[4], ids[3]] and h["more"] is True
            assert h["items"][1]["from"] == "bob" and h["items"][1]["to"] == "alice"
            await me.send(type="history", **{"with": other}, limit=2, before=ids[3], rid="b")
            h = await me.expect("history", skip=("msg",))
            assert [i["id"] for i in h["items"]] == [ids[2], ids[1]] and h["more"] is True
            await me.send(type="history", **{"with": other}, limit=2, before=ids[1], rid="c")
            h = await me.expect("history", skip=("msg",))
            assert [i["id"] for i in h["items"]] == [ids[0]] and h["more"] is False

        await alice.send(type="history", **{"with": "nobody"}, rid="e")
        h = await alice.expect("history", skip=("msg",))
        assert h["items"] == [] and h["more"] is False
        await alice.close()
        await bob.close()

    run(body())


def test_chat_leave_then_send_is_not_member(srv):
    async def body():
        alice = await connect(srv, "alice")
        bob = await connect(srv, "bob")
        await alice.join("lobby")
        await bob.join("lobby")
        await alice.send(type="leave", room="lobby")
        assert await alice.expect("left") == {"type": "left", "room": "lobby"}
        before = count(srv, "SELECT count(*) FROM messages")
        await alice.send(type="send", room="lobby", body="gone", cid="g1")
        e = await alice.expect("error")
        assert e["code"] == "not_member" and e["cid"] == "g1"
        await alice.send(type="leave", room="lobby")
        assert (await alice.expect("error"))["code"] == "not_member"
        assert count(srv, "SELECT count(*) FROM messages") == before
        # alice no longer receives the room live, nor on reconnect
        await bob.post("lobby", "after you left", "b1")
        assert [f for f in await alice.sync() if f["type"] == "msg"] == []
        await alice.close()
        alice = await connect(srv, "alice")
        assert alice.replay == []
        await alice.close()
        await bob.close()

    run(body())


# ---- presence ----


def test_chat_presence_events_on_first_and_last_connection(srv):
    async def body():
        alice = await connect(srv, "alice")
        await alice.join("lobby")
        bob1 = await connect(srv, "bob")
        await bob1.join("lobby")
        await bob1.close()
        await wait_session_ended(srv, bob1.welcome["session"])
        off = await alice.expect("presence")
        assert off["user"] == "bob" and off["state"] == "offline" and "rid" not in off
        assert isinstance(off["last_seen"], int)

        t0 = time.time() * 1000
        bob1 = await connect(srv, "bob")  # first connection: online
        on = await alice.expect("presence")
        assert on["user"] == "bob" and on["state"] == "online" and "rid" not in on
        assert on["last_seen"] >= t0 - 1000

        bob2 = await connect(srv, "bob")  # second connection: nothing
        assert await alice.sync() == []
        await bob2.close()  # not the last one: nothing
        await wait_session_ended(srv, bob2.welcome["session"])
        assert await alice.sync() == []

        # presence query: one answer per user, each with the rid
        await alice.send(type="presence", users=["bob", "nobody"], rid="q1")
        a = await alice.expect("presence")
        b = await alice.expect("presence")
        assert a["rid"] == "q1" and a["user"] == "bob" and a["state"] == "online"
        assert b == {"type": "presence", "rid": "q1", "user": "nobody", "state": "offline",
                     "last_seen": None}

        # members: the room's users with their presence
        await alice.send(type="members", room="lobby", rid="m1")
        m = await alice.expect("members")
        assert m["rid"] == "m1" and m["room"] == "lobby"
        assert [(u["user"], u["state"]) for u in m["users"]] == [("alice", "online"),
                                                                 ("bob", "online")]
        carol = await connect(srv, "carol")
        await carol.send(type="members", room="lobby", rid="m2")
        e = await carol.expect("error")
        assert e["code"] == "not_member" and e["rid"] == "m2"
        # carol shares no room with bob: no events for her
        await bob1.close()  # the last one: offline
        await wait_session_ended(srv, bob1.welcome["session"])
        off = await alice.expect("presence")
        assert off["user"] == "bob" and off["state"] == "offline"
        assert await carol.sync() == []

        await alice.send(type="presence", users=["bob"], rid="q2")
        a = await alice.expect("presence")
        assert a["state"] == "offline" and a["last_seen"] == off["last_seen"]
        assert srv.db_rows("SELECT state, connections FROM presence WHERE user='bob'") == \
            [("offline", 0)]
        await alice.close()
        await carol.close()

    run(body())


# ---- idempotent send ----


def test_chat_same_cid_twice_is_stored_once(srv):
    async def body():
        alice = await connect(srv, "alice")
        bob = await connect(srv, "bob")
        first = await alice.dm("bob", "once", "dup")
        again = await alice.dm("bob", "once (resent)", "dup")
        assert again == {"type": "sent", "cid": "dup", "id": first["id"], "ts": first["ts"],
                         "duplicate": True}
        assert "duplicate" not in first
        assert (await bob.recv())["id"] == first["id"]
        assert await bob.sync() == []  # delivered once
        assert count(srv, "SELECT count(*) FROM messages WHERE cid='dup'") == 1
        assert srv.db_rows("SELECT body FROM messages WHERE cid='dup'") == [('"once"',)]

        # after a reconnect (the client resends what had no receipt): still the same message
        await alice.close()
        alice = await connect(srv, "alice")
        assert (await alice.dm("bob", "once", "dup"))["id"] == first["id"]
        # the cid belongs to the sender: bob may use the same one
        other = await bob.dm("alice", "mine", "dup")
        assert other["id"] != first["id"] and "duplicate" not in other
        assert count(srv, "SELECT count(*) FROM messages") == 2
        await alice.close()
        await bob.close()

    run(body())


# ---- rate limit ----


def test_chat_rate_limit_errors_then_closes_and_spares_acks(start_server):
    srv = start_server(limits={"rate": "1", "rate_burst": "3"})

    async def body():
        alice = await connect(srv, "alice")
        for i in range(3):  # the burst
            await alice.send(type="presence", users=["bob"], rid=f"b{i}")
        for i in range(3):
            assert (await alice.recv())["rid"] == f"b{i}"
        await alice.send(type="presence", users=["bob"], rid="over")
        e = await alice.recv()
        assert e["type"] == "error" and e["code"] == "rate_limited", e
        # acks never pay: a client catching up acks a whole replay at once
        for _ in range(5):
            await alice.send(type="ack", id=424242)
            assert (await alice.recv())["code"] == "bad_request"
        # 20 refused frames in a row close the connection (19 more after the first)
        for _ in range(19):
            await alice.send(type="presence", users=["bob"], rid="x")
        await asyncio.wait_for(alice.ws.wait_closed(), WAIT)
        assert alice.ws.close_code == 1008 and alice.ws.close_reason == "rate limited"
        assert await wait_session_ended(srv, alice.welcome["session"]) == "rate_limited"

    run(body())


# ---- durability ----


def test_chat_receipt_survives_kill9(start_server):
    srv = start_server()

    async def send_then_kill():
        alice = await connect(srv, "alice")
        receipts = []
        for i in range(20):
            receipts.append(await alice.dm("bob", {"seq": i}, f"k{i}"))
        srv.kill9()  # right after the last receipt
        return receipts

    receipts = run(send_then_kill())
    srv.start()

    async def after_restart():
        bob = await connect(srv, "bob")
        assert [(f["id"], f["body"]) for f in bob.replay] == \
            [(r["id"], {"seq": i}) for i, r in enumerate(receipts)]
        await bob.close()
        # the orphaned session of alice was ended at start
        assert count(srv, "SELECT count(*) FROM sessions WHERE user='alice' AND ended_at IS NULL") \
            == 0

    run(after_restart())


def test_chat_room_receipt_survives_kill9(start_server):
    srv = start_server()

    async def send_then_kill():
        alice = await connect(srv, "alice")
        bob = await connect(srv, "bob")
        await alice.join("lobby")
        await bob.join("lobby")
        await bob.close()
        r = await alice.post("lobby", "durable", "k1")
        srv.kill9()
        return r

    r = run(send_then_kill())
    srv.start()

    async def after_restart():
        bob = await connect(srv, "bob")
        assert [(f["id"], f["room"]) for f in bob.replay] == [(r["id"], "lobby")]
        await bob.close()

    run(after_restart())


# ---- bad frames ----

LONG = "x" * 65
BAD_FRAMES = [
    # (case, frame: str = text, bytes = binary, dict = JSON; expected code; echoed cid/rid or None)
    ("not_json", "hello", "bad_json", None),
    ("truncated_json", '{"type":"send"', "bad_json", None),
    ("json_array", "[1,2]", "bad_json", None),
    ("json_string", '"send"', "bad_json", None),
    ("duplicate_keys", '{"type":"send","to":"bob","to":"carol","body":1}', "bad_json", None),
    ("empty_text", "", "bad_json", None),
    ("unknown_type", {"type": "shout", "body": 1}, "unknown_type", None),
    ("no_type", {"to": "bob", "body": 1}, "unknown_type", None),
    ("type_not_string", {"type": 7}, "unknown_type", None),
    ("type_case", {"type": "SEND", "to": "bob", "body": 1}, "unknown_type", None),
    ("binary", b'{"type":"send","to":"bob","body":1}', "bad_request", None),
    ("send_no_body", {"type": "send", "to": "bob", "cid": "k"}, "bad_request", "k"),
    ("send_no_target", {"type": "send", "body": 1, "cid": "k"}, "bad_request", "k"),
    ("send_both_targets", {"type": "send", "to": "bob", "room": "lobby", "body": 1, "cid": "k"},
     "bad_request", "k"),
    ("send_to_number", {"type": "send", "to": 5, "body": 1, "cid": "k"}, "bad_request", "k"),
    ("send_to_empty", {"type": "send", "to": "", "body": 1}, "bad_request", None),
    ("send_to_too_long", {"type": "send", "to": LONG, "body": 1}, "bad_request", None),
    ("send_to_control_char", {"type": "send", "to": "bo\nb", "body": 1}, "bad_request", None),
    ("send_room_list", {"type": "send", "room": ["lobby"], "body": 1}, "bad_request", None),
    ("cid_too_long", {"type": "send", "to": "bob", "body": 1, "cid": "c" * 129}, "bad_request",
     None),
    ("cid_number", {"type": "send", "to": "bob", "body": 1, "cid": 12}, "bad_request", None),
    ("cid_empty", {"type": "send", "to": "bob", "body": 1, "cid": ""}, "bad_request", None),
    ("body_too_large", {"type": "send", "to": "bob", "body": "x" * 1023, "cid": "big"},
     "too_large", "big"),
    ("room_body_too_large", {"type": "send", "room": "lobby", "body": ["y" * 1100], "cid": "big"},
     "too_large", "big"),
    ("ack_no_id", {"type": "ack"}, "bad_request", None),
    ("ack_string_id", {"type": "ack", "id": "1"}, "bad_request", None),
    ("ack_zero", {"type": "ack", "id": 0}, "bad_request", None),
    ("ack_float", {"type": "ack", "id": 1.5}, "bad_request", None),
    ("ack_unknown", {"type": "ack", "id": 999999}, "bad_request", None),
    ("join_no_room", {"type": "join"}, "bad_request", None),
    ("join_room_number", {"type": "join", "room": 1}, "bad_request", None),
    ("join_room_too_long", {"type": "join", "room": LONG}, "bad_request", None),
    ("leave_no_room", {"type": "leave"}, "bad_request", None),
    ("leave_not_member", {"type": "leave", "room": "nowhere"}, "not_member", None),
    ("history_no_target", {"type": "history", "rid": "r"}, "bad_request", "r"),
    ("history_both", {"type": "history", "with": "bob", "room": "lobby", "rid": "r"},
     "bad_request", "r"),
    ("history_limit_0", {"type": "history", "with": "bob", "limit": 0, "rid": "r"},
     "bad_request", "r"),
    ("history_limit_101", {"type": "history", "with": "bob", "limit": 101, "rid": "r"},
     "bad_request", "r"),
    ("history_limit_string", {"type": "history", "with": "bob", "limit": "5", "rid": "r"},
     "bad_request", "r"),
    ("history_before_negative", {"type": "history", "with": "bob", "before": -1, "rid": "r"},
     "bad_request", "r"),
    ("history_rid_too_long", {"type": "history", "with": "bob", "rid": "r" * 129}, "bad_request",
     None),
    ("history_not_member", {"type": "history", "room": "lobby", "rid": "r"}, "not_member", "r"),
    ("presence_no_users", {"type": "presence", "rid": "r"}, "bad_request", "r"),
    ("presence_users_string", {"type": "presence", "users": "bob", "rid": "r"}, "bad_request",
     "r"),
    ("presence_users_empty", {"type": "presence", "users": [], "rid": "r"}, "bad_request", "r"),
    ("presence_user_number", {"type": "presence", "users": ["bob", 3], "rid": "r"},
     "bad_request", "r"),
    ("presence_too_many", {"type": "presence", "users": [f"u{i}" for i in range(101)],
                           "rid": "r"}, "bad_request", "r"),
    ("members_no_room", {"type": "members", "rid": "r"}, "bad_request", "r"),
    ("members_not_member", {"type": "members", "room": "lobby", "rid": "r"}, "not_member", "r"),
    ("refresh_no_token", {"type": "refresh"}, "bad_request", None),
    ("refresh_garbage", {"type": "refresh", "token": "abc"}, "unauthorized", None),
]


@pytest.fixture(scope="module")
def bad_srv(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("bad")), limits={"rate": "0", "max_body": "1KiB"})
    s.start()
    yield s
    s.stop()


@pytest.mark.parametrize("case,frame,code,echo", BAD_FRAMES, ids=[c[0] for c in BAD_FRAMES])
def test_chat_bad_frame_gets_error_and_connection_stays_open(bad_srv, case, frame, code, echo):
    srv = bad_srv

    async def body():
        alice = await connect(srv, "alice")
        messages = count(srv, "SELECT count(*) FROM messages")
        rooms = count(srv, "SELECT count(*) FROM room_members")
        if isinstance(frame, dict):
            await alice.send(**frame)
        else:
            await alice.send_raw(frame)
        e = await alice.recv()
        assert e["type"] == "error" and e["code"] == code, e
        assert isinstance(e["message"], str) and e["message"]
        if echo is not None:
            assert e.get("cid", e.get("rid")) == echo, e
        assert await alice.sync() == []  # one error, nothing else
        assert count(srv, "SELECT count(*) FROM messages") == messages
        assert count(srv, "SELECT count(*) FROM room_members") == rooms
        # still open and working
        r = await alice.dm("bob", "after " + case, "ok-" + case)
        assert "duplicate" not in r
        assert count(srv, "SELECT count(*) FROM messages") == messages + 1
        await alice.close()

    run(body())


def test_chat_body_at_max_body_is_accepted(bad_srv):
    async def body():
        alice = await connect(bad_srv, "alice")
        text = "x" * 1022  # 1024 bytes as JSON text, the limit
        r = await alice.dm("bob", text, "edge")
        assert bad_srv.db_rows("SELECT length(body) FROM messages WHERE id = ?", (r["id"],)) == \
            [(1024,)]
        await alice.close()

    run(body())


# ---- token expiry and refresh ----

NO_LEEWAY = {"jwt_leeway": "0s"}


def short_token(user, seconds=2):
    """A token whose exp lies seconds (at least seconds - 1) ahead; returns it with exp in s."""
    now = int(time.time())
    if now + seconds - time.time() < seconds - 0.5:  # keep at least seconds - 0.5 s of life
        now += 1
    return make_token(user, exp_in=seconds, now=now), now + seconds


def test_chat_token_expiry_closes_1008(start_server):
    srv = start_server(auth=NO_LEEWAY)

    async def body():
        tok, exp = short_token("alice")
        alice = await connect(srv, "alice", url=f"{srv.ws_url}/ws?token={tok}")
        await asyncio.wait_for(alice.ws.wait_closed(), exp - time.time() + WAIT)
        closed = time.time()
        assert alice.ws.close_code == 1008
        assert alice.ws.close_reason == "token expired"
        assert exp - 0.3 <= closed <= exp + 1.5, (exp, closed)
        assert await wait_session_ended(srv, alice.welcome["session"]) == "token_expired"

    run(body())


def test_chat_refresh_keeps_connection_open_past_exp(start_server):
    srv = start_server(auth=NO_LEEWAY)

    async def body():
        tok, exp = short_token("alice")
        alice = await connect(srv, "alice", url=f"{srv.ws_url}/ws?token={tok}")
        fresh = make_token("alice", exp_in=3600)
        await alice.send(type="refresh", token=fresh)
        r = await alice.expect("refreshed")
        assert abs(r["exp"] - (int(time.time()) + 3600) * 1000) <= 2000
        await asyncio.sleep(exp - time.time() + 1.0)
        assert alice.ws.open
        assert await alice.sync() == []
        assert (await alice.dm("bob", "still here", "s1"))["id"] > 0
        await alice.close()

    run(body())


def test_chat_refresh_with_bad_token_is_refused_and_exp_still_applies(start_server):
    srv = start_server(auth=NO_LEEWAY)

    async def body():
        tok, exp = short_token("alice", seconds=3)
        alice = await connect(srv, "alice", url=f"{srv.ws_url}/ws?token={tok}")
        for bad in (make_token("bob", exp_in=3600),            # another user
                    make_token("alice", exp_in=-10),           # expired
                    make_token("alice", secret="wrong-secret-0123456789abcdef"),
                    make_token("alice", alg="none")):
            await alice.send(type="refresh", token=bad)
            e = await alice.expect("error")
            assert e["code"] == "unauthorized", (bad, e)
        assert alice.ws.open
        await asyncio.wait_for(alice.ws.wait_closed(), exp - time.time() + WAIT)
        assert alice.ws.close_code == 1008 and alice.ws.close_reason == "token expired"
        assert time.time() <= exp + 1.5

    run(body())


def test_chat_refresh_to_a_shorter_token_moves_the_deadline(start_server):
    srv = start_server(auth=NO_LEEWAY)

    async def body():
        alice = await connect(srv, "alice")  # exp in an hour
        tok, exp = short_token("alice")
        await alice.send(type="refresh", token=tok)
        assert (await alice.expect("refreshed"))["exp"] == exp * 1000
        await asyncio.wait_for(alice.ws.wait_closed(), exp - time.time() + WAIT)
        assert alice.ws.close_code == 1008
        assert exp - 0.3 <= time.time() <= exp + 1.5

    run(body())


@pytest.mark.parametrize("type_,want", [
    ("shout", 'unknown message type "shout" (types: send,'),
    ("SEND", 'unknown message type "SEND"'),
    ('say"\n\\', 'unknown message type "say"\n\\"'),
    ("é" * 40, 'unknown message type "' + "é" * 16 + '..." (types:'),
    (7, "type must be a string"),
    (None, "type is missing"),
])
def test_chat_unknown_type_names_the_type_it_got(bad_srv, type_, want):
    async def body():
        alice = await connect(bad_srv, "alice")
        frame = {"to": "bob", "body": 1}
        if type_ is not None:
            frame["type"] = type_
        await alice.send_raw(json.dumps(frame))
        e = await alice.recv()
        assert e["type"] == "error" and e["code"] == "unknown_type", e
        assert want in e["message"], e
        assert len(e["message"].encode()) < 200
        await alice.close()

    run(body())
