/* The client paces its frames under the server's rate limit, and finds a tighter one by itself. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Server } from './server.mjs';
import { checkDelivery, newClient, record, sendAll } from './helpers.mjs';

/* The client's own defaults (40/s, bucket 80), not the tests' fast ones. */
const DEFAULT_PACE = { rate: undefined, burst: undefined };

test('a burst of sends under the server default limit is never refused', { timeout: 30000 }, async (t) => {
    const srv = await new Server({ limits: { rate: '50', rate_burst: '100' } }).start();
    t.after(() => srv.cleanup());
    const bob = newClient(t, srv.wsUrl, 'bob');
    const bobLog = record(bob);
    await bob.connect();
    const alice = newClient(t, srv.wsUrl, 'alice', DEFAULT_PACE);
    const aliceLog = record(alice);
    await alice.connect();

    const N = 160;
    const receipts = await sendAll(alice, N, () => {}, N);
    await checkDelivery(srv, N, receipts, bobLog.message);
    assert.deepEqual(aliceLog.error, []);
    assert.equal(aliceLog.open.length, 1, 'never disconnected');
    assert.equal(await srv.metric('wsproxy_messages_out_total{kind="error"}'), 0, 'nothing refused');
});

/* A refused send is sent again after later ones may have been accepted: exactly once, not in order. */
test('a server tighter than the client: refused frames are sent again, slower', { timeout: 30000 }, async (t) => {
    const srv = await new Server({ limits: { rate: '20', rate_burst: '10' } }).start();
    t.after(() => srv.cleanup());
    const bob = newClient(t, srv.wsUrl, 'bob');
    const bobLog = record(bob);
    await bob.connect();
    const alice = newClient(t, srv.wsUrl, 'alice', DEFAULT_PACE);
    const aliceLog = record(alice);
    await alice.connect();

    const N = 60;
    const receipts = await sendAll(alice, N, () => {}, N);
    await checkDelivery(srv, N, receipts, bobLog.message, { inSendOrder: false });
    const errorsSent = await srv.metric('wsproxy_messages_out_total{kind="error"}');
    assert.ok(errorsSent > 0, 'the server did refuse frames');
    assert.deepEqual(aliceLog.error, [], 'rate_limited is handled, not reported');
});
