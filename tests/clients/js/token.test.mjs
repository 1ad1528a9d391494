/* Token lifetime and refused handshakes: refresh in place before exp, a refused refresh, the close at
 * expiry and the reconnect after it, and the reason of a refused handshake as Node's ws reports it. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HandshakeError, ServerError } from '../../../clients/js/wsproxy.js';
import { Server, makeToken, waitFor } from './server.mjs';
import { newClient, record, within } from './helpers.mjs';

/* No leeway: a connection lives exactly until its token's exp, so a missed refresh would show. */
const STRICT = { auth: { jwt_leeway: '0s' } };

test('the token is refreshed before exp without reconnecting', { timeout: 30000 }, async (t) => {
    const srv = await new Server(STRICT).start();
    t.after(() => srv.cleanup());
    let calls = 0;
    let firstExp = 0;
    const carol = newClient(t, srv.wsUrl, 'carol', {
        token: async () => {
            calls += 1;
            const token = makeToken('carol', { expIn: 4 });
            if (!firstExp) firstExp = JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).exp * 1000;
            return token;
        },
    });
    const log = record(carol);
    const welcome = await carol.connect();

    await waitFor(() => log.refreshed.length >= 2 && Date.now() > firstExp + 500,
        'two refreshes and the first token to be dead', 15000);
    const receipt = await within(carol.send({ to: 'dave', body: 'still here' }), 5000, 'a receipt');
    assert.ok(receipt.id > 0);

    assert.equal(log.open.length, 1, 'one welcome: never reconnected');
    assert.deepEqual(log.state.map((s) => s.state), ['connecting', 'open']);
    assert.equal(carol.session, welcome.session);
    assert.ok(log.refreshed.every((f) => f.exp > firstExp), 'each refresh moved the deadline');
    assert.equal(calls, 1 + log.refreshed.length, 'one provider call per connect or refresh');
    const { json } = await srv.api('GET', '/api/v1/sessions?user=carol');
    assert.deepEqual(json.sessions.map((s) => s.state), ['active'], 'one session, still active');
});

test('a refused refresh leaves the connection; at exp the server closes it and the client reconnects',
    { timeout: 30000 }, async (t) => {
        const srv = await new Server(STRICT).start();
        t.after(() => srv.cleanup());
        let phase = 'first';
        const dave = newClient(t, srv.wsUrl, 'dave', {
            token: async () => {
                if (phase === 'first') {
                    phase = 'wrong user';
                    return makeToken('dave', { expIn: 3 });
                }
                return phase === 'wrong user' ? makeToken('mallory') : makeToken('dave');
            },
        });
        const log = record(dave);
        const stateAtError = [];
        dave.on('error', () => stateAtError.push(dave.state));
        dave.on('state', (s) => { if (s.state === 'reconnecting') phase = 'good'; });
        await dave.connect();

        await waitFor(() => log.error.length >= 1, 'the refused refresh');
        assert.ok(log.error[0] instanceof ServerError);
        assert.equal(log.error[0].code, 'unauthorized');
        assert.equal(log.error[0].message, 'token is for another user');
        await waitFor(() => log.open.length === 2, 'the reconnect after expiry', 10000);
        assert.equal(stateAtError[0], 'open', 'the refusal came on the open connection');
        const closes = log.state.filter((s) => s.state === 'reconnecting');
        assert.deepEqual(closes.map((s) => [s.code, s.reason]), [[1008, 'token expired']],
            'the one close was the expiry, not the refusal');
        assert.equal(log.refreshed.length, 0);
    });

test('a refused handshake surfaces the HTTP status and body (Node ws)', { timeout: 30000 }, async (t) => {
    const srv = await new Server().start();
    t.after(() => srv.cleanup());
    const cases = [
        { token: makeToken('erin', { secret: 'not-the-server-secret-0123456789abcdef' }), body: 'invalid token' },
        { token: makeToken('erin', { expIn: -120 }), body: 'token expired' },
    ];
    for (const c of cases) {
        const erin = newClient(t, srv.wsUrl, 'erin', { token: async () => c.token });
        const log = record(erin);
        erin.connect().catch(() => {});
        await waitFor(() => log.error.length >= 1, `the refusal "${c.body}"`);
        erin.close();
        const err = log.error[0];
        assert.ok(err instanceof HandshakeError);
        assert.equal(err.code, 'handshake_refused');
        assert.equal(err.status, 401);
        assert.equal(err.body, c.body);
        assert.equal(err.attempts, 1);
        assert.equal(err.message, `handshake refused: HTTP 401 ${c.body}`);
        assert.equal(log.open.length, 0);
    }
});

test('after a refused handshake the client asks for a new token and gets in', { timeout: 30000 }, async (t) => {
    const srv = await new Server().start();
    t.after(() => srv.cleanup());
    const tokens = [makeToken('frank', { expIn: -120 }), makeToken('frank')];
    const frank = newClient(t, srv.wsUrl, 'frank', { token: async () => tokens.shift() });
    const log = record(frank);
    const welcome = await within(frank.connect(), 10000, 'the welcome');
    assert.equal(welcome.user, 'frank');
    assert.equal(tokens.length, 0, 'the provider was asked again after the 401');
    assert.deepEqual(log.error.map((e) => [e.status, e.body]), [[401, 'token expired']]);
});
