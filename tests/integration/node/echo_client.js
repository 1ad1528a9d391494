// echo_client.js -- drives wsproxy's echo endpoint with node's `ws` package, a second third-party client.
// Usage: node echo_client.js ws://127.0.0.1:PORT/echo [deflate]
// With "deflate" the client offers permessage-deflate (threshold 0: every message compressed) and
// checks that the server accepted it.
// Prints one JSON line {ok, checks, errors, closeCode} and exits 0 only when every check passed.
'use strict';

const WebSocket = require('ws');

const url = process.argv[2];
const deflate = process.argv[3] === 'deflate';
const SIZES = [0, 125, 126, 65535, 65536, 1024 * 1024];
const STEP_TIMEOUT_MS = 5000;
const TOTAL_TIMEOUT_MS = 30000;

const checks = [];
const errors = [];

function finish(ok, closeCode) {
    process.stdout.write(JSON.stringify({ ok, checks, errors, closeCode }) + '\n');
    process.exit(ok ? 0 : 1);
}

setTimeout(() => {
    errors.push('overall timeout');
    finish(false, null);
}, TOTAL_TIMEOUT_MS).unref();

// Valid UTF-8 of exactly n bytes mixing 1- to 4-byte characters.
function textOfBytes(n) {
    const unit = 'a\u00e9\u20ac\u{1F600}'; // 1 + 2 + 3 + 4 bytes
    let s = unit.repeat(Math.floor(n / 10));
    s += 'z'.repeat(n - Buffer.byteLength(s));
    return s;
}

function binaryOfBytes(n) {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 0xff;
    return b;
}

function withTimeout(promise, what) {
    let timer;
    const t = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timeout waiting for ${what}`)), STEP_TIMEOUT_MS);
    });
    return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function check(name, cond, detail) {
    checks.push(name);
    if (!cond) errors.push(`${name}: ${detail || 'failed'}`);
}

async function main() {
    const ws = new WebSocket(url, {
        perMessageDeflate: deflate ? { threshold: 0 } : false,
        handshakeTimeout: STEP_TIMEOUT_MS,
    });
    const inbox = [];
    let waiter = null;
    ws.on('message', (data, isBinary) => {
        inbox.push({ data, isBinary });
        if (waiter) {
            const w = waiter;
            waiter = null;
            w();
        }
    });
    const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
    ws.on('error', (e) => errors.push(`socket error: ${e.message}`));

    async function nextMessage(what) {
        if (!inbox.length) await withTimeout(new Promise((r) => { waiter = r; }), what);
        return inbox.shift();
    }

    await withTimeout(new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    }), 'open');
    check('open', ws.readyState === WebSocket.OPEN);
    if (deflate)
        check('permessage-deflate negotiated', /^permessage-deflate/.test(ws.extensions),
              `extensions "${ws.extensions}"`);

    for (const n of SIZES) {
        const text = textOfBytes(n);
        ws.send(text);
        const m = await nextMessage(`text ${n}`);
        check(`text ${n}`, !m.isBinary && m.data.toString('utf8') === text,
              `binary=${m.isBinary} len=${m.data.length}`);

        const bin = binaryOfBytes(n);
        ws.send(bin);
        const b = await nextMessage(`binary ${n}`);
        check(`binary ${n}`, b.isBinary && Buffer.from(b.data).equals(bin),
              `binary=${b.isBinary} len=${b.data.length}`);
    }

    // A fragmented message: ws sends a frame per send() with fin=false until the last one.
    ws.send('frag', { fin: false });
    ws.send('men', { fin: false });
    ws.send('ted', { fin: true });
    const f = await nextMessage('fragmented');
    check('fragmented', !f.isBinary && f.data.toString() === 'fragmented', f.data.toString());

    const pingData = Buffer.from('node-ping');
    const pong = withTimeout(new Promise((r) => ws.once('pong', r)), 'pong');
    ws.ping(pingData);
    const got = await pong;
    check('ping/pong', Buffer.from(got).equals(pingData), got.toString());

    ws.close(1000, 'bye');
    const code = await withTimeout(closed, 'close');
    check('close 1000', code === 1000, `code ${code}`);
    finish(errors.length === 0, code);
}

main().catch((e) => {
    errors.push(e.message || String(e));
    finish(false, null);
});
