/* Reconnects with sends in flight: the link is reset by a proxy, or the server is killed with SIGKILL
 * and started again on the same port and database. Every send must end with exactly one receipt and
 * one stored message, and the recipient's app must see every message once, in send order. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CuttableProxy, Server, waitFor } from './server.mjs';
import { checkDelivery, newClient, record, replayFor, sendAll, within } from './helpers.mjs';

test('link resets during a burst of sends: one receipt and one delivery per send, in order',
    { timeout: 60000 }, async (t) => {
        const srv = await new Server().start();
        t.after(() => srv.cleanup());
        const proxy = await new CuttableProxy(srv.port).listen();
        t.after(() => proxy.close());

        const bob = newClient(t, proxy.wsUrl, 'bob');
        const bobLog = record(bob);
        await bob.connect();
        const alice = newClient(t, proxy.wsUrl, 'alice');
        const aliceLog = record(alice);
        await alice.connect();

        const N = 300;
        const cutsAt = new Set([25, 110, 190, 260]);
        const inFlight = [];
        const receipts = await sendAll(alice, N, (count) => {
            if (!cutsAt.has(count)) return;
            inFlight.push(alice.pendingSends().length);
            proxy.cut();
        });
        assert.ok(inFlight.every((k) => k > 0), `sends were in flight at every cut (${inFlight})`);
        /* and once more while bob is still catching up */
        if (bobLog.message.length < N) proxy.cut();

        await checkDelivery(srv, N, receipts, bobLog.message);
        const reconnects = aliceLog.state.filter((s) => s.state === 'reconnecting').length;
        assert.ok(reconnects >= cutsAt.size, `alice reconnected after each cut (${reconnects})`);
        assert.equal(bob.pendingSends().length + alice.pendingSends().length, 0);

        /* bob's acks reached the server: a new connection of his is replayed nothing */
        await waitFor(async () => (await replayFor(srv.wsUrl, 'bob')).length === 0, 'bob to have acked everything');
        assert.deepEqual(aliceLog.error.concat(bobLog.error).filter((e) => e.code !== 'handshake_refused'), []);
    });

test('server killed with SIGKILL and restarted on the same port and database mid-burst',
    { timeout: 60000 }, async (t) => {
        const srv = await new Server().start();
        t.after(() => srv.cleanup());

        const bob = newClient(t, srv.wsUrl, 'bob');
        const bobLog = record(bob);
        await bob.connect();
        const alice = newClient(t, srv.wsUrl, 'alice');
        await alice.connect();

        const N = 150;
        let restarted = null;
        let inFlight = 0;
        const receipts = await sendAll(alice, N, (count) => {
            if (count !== 20) return;
            inFlight = alice.pendingSends().length;
            restarted = srv.kill9().then(() => srv.start());
        });
        await restarted;
        assert.ok(inFlight > 0, 'sends were in flight at the kill');
        assert.match(srv.log(), /sessions left open by a previous run/, 'the second run found the first killed');

        await checkDelivery(srv, N, receipts, bobLog.message);
        await waitFor(async () => (await replayFor(srv.wsUrl, 'bob')).length === 0, 'bob to have acked everything');
    });

test('a receipt lost with the link: the resend is answered with the first receipt, stored once',
    { timeout: 30000 }, async (t) => {
        const srv = await new Server().start();
        t.after(() => srv.cleanup());
        const proxy = await new CuttableProxy(srv.port).listen();
        t.after(() => proxy.close());
        const alice = newClient(t, proxy.wsUrl, 'alice');
        await alice.connect();

        proxy.hold('down');
        let settled = 0;
        const sent = alice.send({ to: 'bob', body: 'once', cid: 'lost-receipt' }).finally(() => { settled += 1; });
        const [stored] = await waitFor(async () => {
            const h = await srv.conversation('alice', 'bob');
            return h.length ? h : null;
        }, 'the server to store the send');
        assert.equal(settled, 0, 'the receipt did not get through');
        proxy.cut();

        const receipt = await within(sent, 10000, 'the receipt after the reconnect');
        assert.deepEqual(receipt, { cid: 'lost-receipt', id: stored.id, ts: stored.ts, duplicate: true });
        assert.equal(settled, 1);
        assert.equal((await srv.conversation('alice', 'bob')).length, 1, 'nothing stored twice');
    });

test('an ack lost with the link: the replayed message reaches the app once, then is acked',
    { timeout: 30000 }, async (t) => {
        const srv = await new Server().start();
        t.after(() => srv.cleanup());
        const proxy = await new CuttableProxy(srv.port).listen();
        t.after(() => proxy.close());
        const bob = newClient(t, proxy.wsUrl, 'bob');
        const log = record(bob);
        await bob.connect();

        proxy.hold('up');
        const { json: pushed } = await srv.api('POST', '/api/v1/push', { to: 'bob', body: 'hello', cid: 'p1' });
        await waitFor(() => log.message.length === 1, 'bob to get the message');
        const before = await srv.api('GET', `/api/v1/messages/${pushed.id}`);
        assert.equal(before.json.state, 'stored', 'the ack was lost');

        proxy.cut();
        await waitFor(() => log.open.length === 2, 'bob to reconnect');
        await waitFor(async () => (await srv.api('GET', `/api/v1/messages/${pushed.id}`)).json.state === 'delivered',
            'the replayed copy to be acked');
        assert.equal(log.message.length, 1, 'the replayed copy was not given to the app again');
        assert.equal(log.message[0].id, pushed.id);
    });

test('reconnectNow() skips the backoff wait', { timeout: 15000 }, async (t) => {
    const srv = await new Server().start();
    t.after(() => srv.cleanup());
    const proxy = await new CuttableProxy(srv.port).listen();
    t.after(() => proxy.close());
    const ivy = newClient(t, proxy.wsUrl, 'ivy', { backoffBaseMs: 60000, backoffMaxMs: 60000 });
    const log = record(ivy);
    await ivy.connect();
    proxy.cut();
    await waitFor(() => ivy.state === 'reconnecting', 'the drop');
    assert.ok(log.state[log.state.length - 1].delayMs >= 30000, 'a long wait was planned');
    ivy.reconnectNow();
    await waitFor(() => log.open.length === 2, 'the reconnect', 5000);
});

test('a silently dead link is found by a probe and replaced', { timeout: 15000 }, async (t) => {
    /* the server pings after 1 s of silence but waits long for the answer: the client must act first */
    const srv = await new Server({ heartbeat: { ping_interval: '1s', pong_timeout: '60s' } }).start();
    t.after(() => srv.cleanup());
    const proxy = await new CuttableProxy(srv.port).listen();
    t.after(() => proxy.close());
    const jo = newClient(t, proxy.wsUrl, 'jo', { probeTimeoutMs: 500 });
    const log = record(jo);
    await jo.connect();
    proxy.hold('down');
    const sent = jo.send({ to: 'kim', body: 'into the void' });
    await waitFor(() => log.open.length === 2, 'the probe to give up on the link', 10000);
    const drop = log.state.find((s) => s.state === 'reconnecting');
    assert.equal(drop.reason, 'no answer to a probe');
    assert.equal((await within(sent, 5000, 'the receipt on the new link')).id > 0, true);
});
