"""Room membership events: other members hear of a join or leave ("member"), every device of the
user gets "joined"/"left", and a repeated join is not announced again."""
import asyncio
import json

from test_presence_limit import connect, frames_until_answer, join
from wsp import Server


def test_room_member_events(tmp_path):
    srv = Server(str(tmp_path)).start()

    async def body():
        alice = await connect(srv, "alice")
        await join(alice, "lobby")
        bob = await connect(srv, "bob")
        bob2 = await connect(srv, "bob")
        await join(bob, "lobby")
        seen = await frames_until_answer(alice, "a1")
        assert {"type": "member", "room": "lobby", "user": "bob", "event": "joined"} in seen
        # bob's other device learns it is in the room too, and nobody tells bob about himself
        seen2 = await frames_until_answer(bob2, "b1")
        assert {"type": "joined", "room": "lobby"} in seen2
        assert not [f for f in seen2 if f["type"] == "member"]
        assert not [f for f in await frames_until_answer(bob, "b0") if f["type"] == "member"]

        # joining again changes nothing and announces nothing
        await join(bob, "lobby")
        assert not [f for f in await frames_until_answer(alice, "a2") if f["type"] == "member"]

        await bob.send(json.dumps({"type": "leave", "room": "lobby"}))
        # bob's "left" goes out with the commit that sends alice's member event: ask her only
        # then, or her query can be served first in the same loop iteration (seen under ASan)
        assert {"type": "left", "room": "lobby"} in await frames_until_answer(bob, "b3")
        seen = await frames_until_answer(alice, "a3")
        assert {"type": "member", "room": "lobby", "user": "bob", "event": "left"} in seen
        assert {"type": "left", "room": "lobby"} in await frames_until_answer(bob2, "b2")
        for ws in (alice, bob, bob2):
            await ws.close()

    try:
        asyncio.run(body())
    finally:
        srv.stop()
