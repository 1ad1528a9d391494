/* The client on a browser's WebSocket API: Node's built-in (undici) WebSocket, which like a browser
 * never shows a script the HTTP answer of a refused handshake. run.sh turns it on with
 * --experimental-websocket; without a global WebSocket these tests are skipped. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HandshakeError, WsproxyClient } from '../../../clients/js/wsproxy.js';
import { CuttableProxy, Server, makeToken, waitFor } from './server.mjs';
import { FAST, checkDelivery, record, sendAll } from './helpers.mjs';

const skip = typeof globalThis.WebSocket !== 'function' && 'no global WebSocket (node --experimental-websocket)';

/* No WebSocket option: the client takes globalThis.WebSocket, as it does in a browser. */
function browserClient(t, url, user, options = {}) {
    const client = new WsproxyClient({ url, token: async () => makeToken(user), ...FAST, ...options });
    t.after(() => client.close());
    return client;
}

test('browser API: a refused handshake is reported after N failures in a row, without a status',
    { skip, timeout: 30000 }, async (t) => {
        const srv = await new Server().start();
        t.after(() => srv.cleanup());
        let calls = 0;
        const c = browserClient(t, srv.wsUrl, 'hank', {
            handshakeFailureLimit: 3,
            token: async () => { calls += 1; return makeToken('hank', { expIn: -120 }); },
        });
        const log = record(c);
        c.connect().catch(() => {});
        await waitFor(() => log.error.length >= 1, 'the handshake_refused report');
        const err = log.error[0];
        assert.ok(err instanceof HandshakeError);
        assert.deepEqual([err.code, err.status, err.body, err.attempts], ['handshake_refused', null, null, 3]);
        assert.match(err.message, /3 attempts in a row closed before the server's welcome/);
        assert.ok(calls >= 3, 'a new token was asked for after each failure');
        assert.equal(log.open.length, 0);
    });

test('browser API: sends in flight across link resets, one receipt and one delivery each',
    { skip, timeout: 60000 }, async (t) => {
        const srv = await new Server().start();
        t.after(() => srv.cleanup());
        const proxy = await new CuttableProxy(srv.port).listen();
        t.after(() => proxy.close());
        const bob = browserClient(t, proxy.wsUrl, 'bob');
        const alice = browserClient(t, proxy.wsUrl, 'alice');
        const bobLog = record(bob);
        await bob.connect();
        await alice.connect();

        const N = 120;
        const receipts = await sendAll(alice, N, (count) => { if (count % 40 === 10) proxy.cut(); });
        await checkDelivery(srv, N, receipts, bobLog.message);
    });
