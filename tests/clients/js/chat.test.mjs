/* The rest of the protocol through the client: rooms, member and presence events, queries, history
 * paging, a truncated replay, broadcasts, errors tied to their call, a kick. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ServerError, WsproxyError } from '../../../clients/js/wsproxy.js';
import { Server, waitFor } from './server.mjs';
import { newClient, record, replayFor, within } from './helpers.mjs';

const bodies = (list) => list.map((m) => m.body);

test('rooms, events, queries, history paging and a truncated replay', { timeout: 30000 }, async (t) => {
    const srv = await new Server({ store: { max_replay: '2' } }).start();
    t.after(() => srv.cleanup());
    const alice = newClient(t, srv.wsUrl, 'alice');
    const bob = newClient(t, srv.wsUrl, 'bob');
    const aliceLog = record(alice);
    const bobLog = record(bob);

    /* a call made before connect() waits for the connection */
    const joined = alice.join('lobby');
    await alice.connect();
    await within(joined, 5000, 'alice joining');
    assert.deepEqual(alice.rooms, ['lobby']);
    assert.deepEqual(aliceLog.joined.map((f) => f.room), ['lobby']);

    await bob.connect();
    await bob.join('lobby');
    await waitFor(() => aliceLog.member.length === 1, 'the member event');
    assert.deepEqual(aliceLog.member[0], { type: 'member', room: 'lobby', user: 'bob', event: 'joined' });

    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(await alice.send({ room: 'lobby', body: `r${i}` }));
    await waitFor(() => bobLog.message.length === 5, 'bob to get the room messages');
    assert.deepEqual(bodies(bobLog.message), ['r0', 'r1', 'r2', 'r3', 'r4']);
    assert.ok(bobLog.message.every((m) => m.room === 'lobby' && m.from === 'alice' && !m.replay));

    const members = await bob.members('lobby');
    assert.deepEqual(members.map((m) => [m.user, m.state]), [['alice', 'online'], ['bob', 'online']]);
    const presence = await bob.presence(['alice', 'nobody']);
    assert.deepEqual(presence.map((p) => [p.user, p.state, p.user === 'nobody' ? p.last_seen : 'seen']),
        [['alice', 'online', 'seen'], ['nobody', 'offline', null]]);

    /* newest first, two at a time */
    const pages = [];
    let before;
    for (;;) {
        const page = await bob.history({ room: 'lobby', limit: 2, before });
        pages.push(bodies(page.items));
        if (!page.more) {
            assert.equal(page.nextBefore, null);
            break;
        }
        before = page.nextBefore;
    }
    assert.deepEqual(pages, [['r4', 'r3'], ['r2', 'r1'], ['r0']]);

    /* alice's own room messages moved her cursor: a new connection of hers is replayed nothing */
    await waitFor(async () => (await replayFor(srv.wsUrl, 'alice')).length === 0, "alice's cursor");

    bob.close();
    await waitFor(() => aliceLog.presence.some((p) => p.user === 'bob' && p.state === 'offline'),
        'the offline event');
    for (let i = 5; i < 9; i++) await alice.send({ room: 'lobby', body: `r${i}` });

    /* bob comes back: only the newest two of four, then "truncated", then "replayed" */
    const bob2 = newClient(t, srv.wsUrl, 'bob');
    const bob2Log = record(bob2);
    const order = [];
    for (const type of ['message', 'truncated', 'replayed']) bob2.on(type, () => order.push(type));
    await bob2.connect();
    await waitFor(() => bob2Log.replayed.length === 1, 'the end of the replay');
    assert.deepEqual(bodies(bob2Log.message), ['r7', 'r8']);
    assert.ok(bob2Log.message.every((m) => m.replay === true));
    assert.deepEqual(order, ['message', 'message', 'truncated', 'replayed']);
    assert.deepEqual(bob2Log.truncated.map((f) => f.room), ['lobby']);
    assert.deepEqual(bob2.rooms, ['lobby'], 'membership comes with the welcome');
    await waitFor(() => aliceLog.presence.some((p) => p.user === 'bob' && p.state === 'online'),
        'the online event');

    /* a broadcast reaches every live connection */
    const { status } = await srv.api('POST', '/api/v1/push', { broadcast: true, body: { notice: 'hi' } });
    assert.equal(status, 202);
    await waitFor(() => aliceLog.broadcast.length === 1 && bob2Log.broadcast.length === 1, 'the broadcast');
    assert.deepEqual(aliceLog.broadcast[0].body, { notice: 'hi' });

    await bob2.leave('lobby');
    assert.deepEqual(bob2.rooms, []);
    await waitFor(() => aliceLog.member.some((m) => m.user === 'bob' && m.event === 'left'), 'the left event');
    await assert.rejects(bob2.leave('lobby'), (e) => e instanceof ServerError && e.code === 'not_member');
    await assert.rejects(bob2.send({ room: 'lobby', body: 'x' }),
        (e) => e instanceof ServerError && e.code === 'not_member' && e.frame.cid !== undefined);
    await assert.rejects(bob2.history({ room: 'lobby' }), (e) => e.code === 'not_member');
    assert.deepEqual(aliceLog.error.concat(bobLog.error, bob2Log.error), [], 'no stray errors');
});

test('calls are checked before they are sent', async (t) => {
    const c = newClient(t, 'ws://127.0.0.1:9/ws', 'alice');
    const bad = [
        c.send({ body: 1 }),
        c.send({ to: 'a', room: 'b', body: 1 }),
        c.send({ to: 'x'.repeat(65), body: 1 }),
        c.send({ to: 'bob' }),
        c.send({ to: 'bob', body: 1, cid: '' }),
        c.history({ room: 'r', limit: 101 }),
        c.presence([]),
        c.join('a\nb'),
    ];
    for (const p of bad) await assert.rejects(p, (e) => e instanceof WsproxyError && e.code === 'bad_request');
    await assert.rejects(c.send({ to: 'bob', body: 'x'.repeat(2 * 1024 * 1024) }), (e) => e.code === 'too_large');
    assert.throws(() => newClient(t, 'http://127.0.0.1/ws', 'a'), TypeError);
    assert.equal(c.state, 'idle');
});

test('a send is idempotent by cid within the client', { timeout: 10000 }, async (t) => {
    const srv = await new Server().start();
    t.after(() => srv.cleanup());
    const alice = newClient(t, srv.wsUrl, 'alice');
    const a = alice.send({ to: 'bob', body: 1, cid: 'same' });
    const b = alice.send({ to: 'bob', body: 2, cid: 'same' });
    assert.equal(a, b, 'the pending call is returned');
    await alice.connect();
    const first = await a;
    assert.equal(first.duplicate, false);
    const again = await alice.send({ to: 'bob', body: 3, cid: 'same' });
    assert.deepEqual(again, { ...first, duplicate: true }, 'the server answers a later one with the first receipt');
});

test('a kick closes the client for good: no reconnect, later calls refused', { timeout: 10000 }, async (t) => {
    const srv = await new Server().start();
    t.after(() => srv.cleanup());
    const gina = newClient(t, srv.wsUrl, 'gina');
    const log = record(gina);
    await gina.connect();
    const { json } = await srv.api('GET', '/api/v1/sessions?user=gina&state=active');
    const kicked = await srv.api('DELETE', `/api/v1/sessions/${json.sessions[0].id}`);
    assert.equal(kicked.status, 204);
    await waitFor(() => gina.state === 'closed', 'the client to close');
    const last = log.state[log.state.length - 1];
    assert.deepEqual([last.code, last.reason], [1008, 'kicked']);
    await assert.rejects(gina.send({ to: 'bob', body: 1 }), (e) => e.code === 'closed');
    assert.equal(log.state.filter((s) => s.state === 'reconnecting').length, 0, 'no reconnect after a kick');
});
