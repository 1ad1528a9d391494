"""Session rows of live connections: last_seen_at follows the peer while it is connected."""
import asyncio

from test_presence_limit import connect
from wsp import Server


def test_active_session_last_seen_follows_the_peer(tmp_path):
    # With pings every 200 ms, an open session's last_seen_at moves on while it is live, so the API
    # and wsctl show live sessions as recently seen rather than frozen at connect time.
    srv = Server(str(tmp_path), heartbeat={"ping_interval": "200ms", "pong_timeout": "2s"}).start()

    async def body():
        ws = await connect(srv, "alice")
        first = srv.db_rows("SELECT connected_at, last_seen_at FROM sessions WHERE user = 'alice'")[0]
        await asyncio.sleep(1.0)  # websockets answers the pings by itself
        row = srv.db_rows("SELECT connected_at, last_seen_at, ended_at FROM sessions "
                          "WHERE user = 'alice'")[0]
        assert row[2] is None
        assert row[1] >= row[0] + 500, (first, row)
        await ws.close()

    try:
        asyncio.run(body())
    finally:
        srv.stop()
