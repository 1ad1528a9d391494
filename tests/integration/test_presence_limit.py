"""[limits] presence_fanout_max: presence events go to rooms up to that many live connections and
are skipped above it (clients of big rooms ask instead), so a mass reconnect stays linear."""
import asyncio
import json

import websockets

from wsp import Server


async def connect(srv, user):
    ws = await websockets.connect(srv.chat_url(user))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    while json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] != "replayed":
        pass
    return ws


async def join(ws, room):
    await ws.send(json.dumps({"type": "join", "room": room}))
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if f["type"] == "joined":
            return


async def frames_until_answer(ws, rid):
    """Every frame before the answer to a presence query with rid (which flushes what came before)."""
    await ws.send(json.dumps({"type": "presence", "users": ["nobody"], "rid": rid}))
    seen = []
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if f.get("rid") == rid:
            return seen
        seen.append(f)


def test_presence_events_skip_rooms_over_the_limit(tmp_path):
    srv = Server(str(tmp_path), limits={"rate": "0", "presence_fanout_max": "2"}).start()

    async def body():
        alice = await connect(srv, "alice")
        await join(alice, "lobby")
        bob = await connect(srv, "bob")
        await join(bob, "lobby")
        await bob.close()
        await asyncio.sleep(0.2)
        assert any(f["type"] == "presence" and f.get("user") == "bob" and f["state"] == "offline"
                   for f in await frames_until_answer(alice, "a1"))

        # two live connections in lobby: at the limit, bob's arrival is announced
        bob = await connect(srv, "bob")
        assert any(f["type"] == "presence" and f.get("user") == "bob" and f["state"] == "online"
                   for f in await frames_until_answer(alice, "a2"))

        # a third live connection: over the limit, bob's departure is not fanned out
        carol = await connect(srv, "carol")
        await join(carol, "lobby")
        await bob.close()
        await asyncio.sleep(0.3)
        assert not [f for f in await frames_until_answer(alice, "a3") if f["type"] == "presence"]
        assert not [f for f in await frames_until_answer(carol, "c1") if f["type"] == "presence"]
        # ... but the state is right when asked
        await alice.send(json.dumps({"type": "presence", "users": ["bob"], "rid": "q"}))
        answer = json.loads(await asyncio.wait_for(alice.recv(), 5))
        assert answer["user"] == "bob" and answer["state"] == "offline"
        await alice.close()
        await carol.close()

    try:
        asyncio.run(body())
    finally:
        srv.stop()

