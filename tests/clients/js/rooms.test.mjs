/* Closed rooms and the conversation list through the client: conversations() paging with unread
 * counts, a forbidden join/send/history as a ForbiddenError, joined/left with the backend's reason,
 * deleted messages, the API marker on pushes. The server opens only "lobby" here. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ForbiddenError, ServerError } from '../../../clients/js/wsproxy.js';
import { Server, waitFor } from './server.mjs';
import { newClient, record } from './helpers.mjs';

async function rejectsForbidden(promise, room) {
    await assert.rejects(promise, (e) => {
        assert.ok(e instanceof ForbiddenError, `a ForbiddenError, got ${e && e.name}: ${e && e.message}`);
        assert.ok(e instanceof ServerError);
        assert.equal(e.code, 'forbidden');
        assert.equal(e.room, room);
        return true;
    });
}

test('conversations: rooms and direct messages, newest first, unread counts, paging', { timeout: 30000 }, async (t) => {
    const srv = await new Server({ rooms: { open: 'lobby' } }).start();
    t.after(() => srv.cleanup());
    const alice = newClient(t, srv.wsUrl, 'alice');
    const bob = newClient(t, srv.wsUrl, 'bob');
    const carol = newClient(t, srv.wsUrl, 'carol');
    await Promise.all([alice.connect(), bob.connect(), carol.connect()]);
    await alice.join('lobby');
    await bob.join('lobby');
    alice.close();   /* alice is away: what comes now is unread for her */

    await bob.send({ to: 'alice', body: { text: 'dm from bob' } });
    await bob.send({ room: 'lobby', body: 'lobby 1' });
    await bob.send({ room: 'lobby', body: 'lobby 2' });
    await carol.send({ to: 'alice', body: 'dm from carol' });
    await carol.send({ to: 'alice', body: 'again from carol' });
    assert.equal((await srv.api('POST', '/api/v1/push', { to: 'alice', body: { text: 'your order' } })).status, 202);

    /* a new device of alice: it asks for the list */
    const device = newClient(t, srv.wsUrl, 'alice');
    /* asked before connect(): it goes out with the welcome, before the replay is acked */
    const listed = device.conversations();
    await device.connect();
    const all = await listed;
    assert.equal(all.more, false);
    assert.equal(all.nextBefore, null);
    const view = all.items.map((c) => [c.room ? '#' + c.room : c.with, c.unread, c.last.from,
        c.last.preview, c.last.via || null]);
    assert.deepEqual(view, [
        ['system', 1, 'system', 'your order', 'api'],
        ['carol', 2, 'carol', 'again from carol', null],
        ['#lobby', 2, 'bob', 'lobby 2', null],
        ['bob', 1, 'bob', 'dm from bob', null],
    ]);
    const ids = all.items.map((c) => c.last.id);
    assert.deepEqual(ids, ids.slice().sort((a, b) => b - a), 'newest last message first');

    /* the replay reached the device's app, which acked it: nothing is unread any more */
    await waitFor(async () => (await device.conversations()).items.every((c) => c.unread === 0), 'the acks');
    /* two at a time */
    const first = await device.conversations({ limit: 2 });
    assert.equal(first.more, true);
    assert.equal(first.nextBefore, first.items[1].last.id);
    const second = await device.conversations({ limit: 2, before: first.nextBefore });
    assert.equal(second.more, false);
    assert.equal(second.nextBefore, null);
    assert.deepEqual(first.items.concat(second.items).map((c) => c.last.id), ids);

    await assert.rejects(device.conversations({ limit: 101 }), { code: 'bad_request' });
    await assert.rejects(device.conversations({ before: -1 }), { code: 'bad_request' });
});

test('a closed room: forbidden, then added, removed and deleted by the backend', { timeout: 30000 }, async (t) => {
    const srv = await new Server({ rooms: { open: 'lobby' } }).start();
    t.after(() => srv.cleanup());
    const alice = newClient(t, srv.wsUrl, 'alice');
    const log = record(alice, ['joined', 'left', 'error', 'deleted', 'message']);
    await alice.connect();

    /* the refused join is answered quickly (no timeout) with the room it was for */
    const started = Date.now();
    await rejectsForbidden(alice.join('team'), 'team');
    assert.ok(Date.now() - started < 3000, 'the join is answered, not timed out');
    await rejectsForbidden(alice.send({ room: 'team', body: 'hi' }), 'team');
    await rejectsForbidden(alice.history({ room: 'team' }), 'team');
    await rejectsForbidden(alice.members('team'), 'team');
    /* two refused joins in a row each get their own answer */
    await Promise.all([rejectsForbidden(alice.join('team'), 'team'), rejectsForbidden(alice.join('staff'), 'staff')]);
    /* an open room still works, and a not_member stays a plain ServerError */
    await assert.rejects(alice.send({ room: 'lobby', body: 1 }), (e) => !(e instanceof ForbiddenError) && e.code === 'not_member');
    await alice.join('lobby');
    assert.deepEqual(log.error, [], 'nothing left over as an unattached error');
    assert.equal(log.joined.at(-1).reason, undefined, 'her own join has no reason');

    /* the backend adds her */
    assert.equal((await srv.api('POST', '/api/v1/rooms/team/members', { user: 'alice' })).status, 200);
    await waitFor(() => log.joined.some((f) => f.room === 'team'), 'joined team');
    assert.deepEqual(log.joined.find((f) => f.room === 'team'), { type: 'joined', room: 'team', reason: 'added' });
    assert.deepEqual(alice.rooms, ['lobby', 'team']);
    const r = await alice.send({ room: 'team', body: 'in at last' });

    /* a message deleted by the backend */
    const bob = newClient(t, srv.wsUrl, 'bob');
    await bob.connect();
    const dm = await bob.send({ to: 'alice', body: 'oops' });
    await waitFor(() => log.message.some((m) => m.id === dm.id), 'the dm');
    assert.equal((await srv.api('DELETE', `/api/v1/messages/${dm.id}`)).status, 204);
    await waitFor(() => log.deleted.length === 1, 'the deleted event');
    assert.equal(log.deleted[0].id, dm.id);
    assert.equal((await srv.api('DELETE', `/api/v1/messages/${r.id}`)).status, 204);
    await waitFor(() => log.deleted.length === 2, 'the deleted event of a room message');
    assert.deepEqual(log.deleted[1], { type: 'deleted', id: r.id, room: 'team' });
    const list = await alice.conversations();
    const team = list.items.find((c) => c.room === 'team');
    assert.equal(team.last.deleted, true);
    assert.equal(team.last.preview, undefined);

    /* removed, then the room deleted */
    assert.equal((await srv.api('DELETE', '/api/v1/rooms/team/members/alice')).status, 204);
    await waitFor(() => log.left.length === 1, 'left team');
    assert.deepEqual(log.left[0], { type: 'left', room: 'team', reason: 'removed' });
    assert.deepEqual(alice.rooms, ['lobby']);
    await rejectsForbidden(alice.send({ room: 'team', body: 'still here?' }), 'team');
    assert.equal((await srv.api('POST', '/api/v1/rooms/team/members', { user: 'alice' })).status, 200);
    await waitFor(() => alice.rooms.includes('team'), 'added again');
    assert.equal((await srv.api('DELETE', '/api/v1/rooms/team')).status, 204);
    await waitFor(() => log.left.length === 2, 'the room deleted');
    assert.deepEqual(log.left[1], { type: 'left', room: 'team', reason: 'deleted' });
    assert.deepEqual(log.error, []);
});

test('a pushed message carries via "api"', { timeout: 30000 }, async (t) => {
    const srv = await new Server().start();
    t.after(() => srv.cleanup());
    const alice = newClient(t, srv.wsUrl, 'alice');
    const log = record(alice, ['message']);
    await alice.connect();
    await srv.api('POST', '/api/v1/push', { to: 'alice', from: 'shop', body: { text: 'shipped' } });
    const bob = newClient(t, srv.wsUrl, 'bob');
    await bob.connect();
    await bob.send({ to: 'alice', body: 'hand typed' });
    await waitFor(() => log.message.length === 2, 'both messages');
    assert.deepEqual(log.message.map((m) => [m.from, m.via || null]), [['shop', 'api'], ['bob', null]]);
    const page = await alice.history({ with: 'shop' });
    assert.equal(page.items[0].via, 'api');
});
