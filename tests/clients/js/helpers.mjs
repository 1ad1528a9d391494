/* helpers.mjs -- what the client test files share: a client wired to the test server's tokens, a
 * recorder of its events, a deadline around a promise, and a look at what a fresh connection of a
 * user would be replayed. */
import WebSocket from 'ws';

import { WsproxyClient } from '../../../clients/js/wsproxy.js';
import { makeToken } from './server.mjs';

/* Fast reconnects and no pacing to speak of: the tests are about correctness, not politeness. */
export const FAST = Object.freeze({
    backoffBaseMs: 20, backoffMaxMs: 200, connectTimeoutMs: 5000, requestTimeoutMs: 5000,
    rate: 10000, burst: 10000,
});

/** A client for user on url; token() mints a fresh one-hour token unless options.token says else. */
export function newClient(url, user, options = {}) {
    return new WsproxyClient({
        url,
        WebSocket,
        token: async () => makeToken(user),
        ...FAST,
        ...options,
    });
}

/** Records every event of a client, by type, in order. */
export function record(client, types = ['state', 'open', 'message', 'error', 'replayed', 'refreshed',
    'presence', 'member', 'joined', 'left', 'truncated', 'broadcast']) {
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
