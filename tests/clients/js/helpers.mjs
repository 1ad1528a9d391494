/* helpers.mjs -- what the client test files share: a client wired to the test server's tokens, a
 * recorder of its events, a deadline around a promise, and a look at what a fresh connection of a
 * user would be replayed. */
import assert from 'node:assert/strict';

import WebSocket from 'ws';

import { WsproxyClient } from '../../../clients/js/wsproxy.js';
import { makeToken, waitFor } from './server.mjs';

/* Fast reconnects and no pacing to speak of: the tests are about correctness, not politeness. */
export const FAST = Object.freeze({
    backoffBaseMs: 20, backoffMaxMs: 200, connectTimeoutMs: 5000, requestTimeoutMs: 5000,
    rate: 10000, burst: 10000,
});

/** A client for user on url, closed when test t ends; its token() mints a one-hour token unless
 * options.token says else. */
export function newClient(t, url, user, options = {}) {
    const client = new WsproxyClient({
        url,
        WebSocket,
        token: async () => makeToken(user),
        ...FAST,
        ...options,
    });
    t.after(() => client.close());
    return client;
}

/** Records every event of a client, by type, in order. */
export function record(client, types = ['state', 'open', 'message', 'error', 'replayed', 'refreshed',
    'presence', 'member', 'joined', 'left', 'truncated', 'broadcast', 'deleted']) {
    const log = {};
    for (const type of types) {
        log[type] = [];
        client.on(type, (v) => log[type].push(v));
    }
    return log;
}

export async function within(promise, ms, what) {
    let timer;
    const deadline = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    try {
        return await Promise.race([promise, deadline]);
    } finally {
        clearTimeout(timer);
    }
}

/** The msg frames a new connection of user gets replayed (it acks nothing and closes after). */
export function replayFor(wsUrl, user) {
    return within(new Promise((resolve, reject) => {
        const ws = new WebSocket(`${wsUrl}?token=${makeToken(user)}`);
        const msgs = [];
        ws.on('message', (data) => {
            const f = JSON.parse(data.toString());
            if (f.type === 'msg') msgs.push(f);
            if (f.type === 'replayed') {
                ws.close();
                resolve(msgs);
            }
        });
        ws.on('error', reject);
    }), 5000, `the replay of ${user}`);
}

/* alice sends n messages to bob, keeping `window` of them unanswered at any time (a receipt lets the
 * next one go), so a break always finds sends in flight. onReceipt(count) may break things. */
export async function sendAll(alice, n, onReceipt, window = 40) {
    const receipts = new Array(n);
    let next = 0;
    let count = 0;
    let fail;
    const failed = new Promise((_, reject) => { fail = reject; });
    let done;
    const all = new Promise((resolve) => { done = resolve; });
    const sendNext = () => {
        const i = next++;
        alice.send({ to: 'bob', body: { n: i }, cid: `m${i}` }).then((r) => {
            receipts[i] = r;
            count += 1;
            onReceipt(count);
            if (next < n) sendNext();
            if (count === n) done();
        }, fail);
    };
    while (next < Math.min(window, n)) sendNext();
    await within(Promise.race([all, failed]), 30000, `${n} receipts`);
    return receipts;
}

/**
 * Each send was stored exactly once under the id of its receipt, and bob's app got every message
 * once, in id order. With inSendOrder the ids also follow the order of the sends: that holds unless
 * the server dropped frames for its rate limit (then a refused send is stored after later ones).
 */
export async function checkDelivery(srv, n, receipts, got, { inSendOrder = true } = {}) {
    const ids = receipts.map((r) => r.id);
    assert.equal(new Set(ids).size, n, 'one distinct message id per send');
    const byId = (a, b) => a - b;
    if (inSendOrder) assert.deepEqual(ids, ids.slice().sort(byId), 'ids grow in send order');

    const stored = await srv.conversation('alice', 'bob');
    assert.deepEqual(stored.map((m) => m.id), ids.slice().sort(byId), 'the receipts name the stored messages');
    assert.deepEqual(stored.map((m) => m.body.n), stored.map((m) => ids.indexOf(m.id)), 'each send stored once, as sent');

    await waitFor(() => got.length >= n, `bob's app to get ${n} messages`, 15000);
    assert.deepEqual(got.map((m) => m.id), stored.map((m) => m.id), 'bob sees each message once, in id order');
}
