/* server.mjs -- runs the real wsproxy for the client tests: random loopback ports, a temp directory
 * with its config and database, HS256 tokens, the HTTP API, a TCP proxy that can be cut, and a
 * helper to wait on a condition with a deadline. Modelled on tests/integration/wsp.py. */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.resolve(ROOT, process.env.WSP_BIN || 'build/wsproxy');
export const SECRET = 'client-test-secret-0123456789abcdef0123';
export const API_KEY = 'client-test-api-key-0123456789';

/** Resolves once cond() returns a truthy value (which it resolves with); rejects at the deadline. */
export async function waitFor(cond, what, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
    }
}

export function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An HS256 JWT for sub; expIn seconds (null: no exp). */
export function makeToken(sub, { expIn = 3600, secret = SECRET } = {}) {
    const now = Math.floor(Date.now() / 1000);
    const payload = { sub, iat: now };
    if (expIn !== null) payload.exp = now + expIn;
    const signing = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' })) + '.' + b64url(JSON.stringify(payload));
    return signing + '.' + crypto.createHmac('sha256', secret).update(signing).digest('base64url');
}

/** A wsproxy process with its own temp dir; sections are merged over the test defaults. */
export class Server {
    constructor(sections = {}) {
        this.sections = sections;
        this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsp-clients-'));
        this.proc = null;
    }

    async init() {
        this.port = await freePort();
        this.apiPort = await freePort();
        const conf = {
            server: { listen: `127.0.0.1:${this.port}`, static_dir: '', close_timeout: '2s', drain_timeout: '3s' },
            auth: { jwt_secret: SECRET },
            store: { path: path.join(this.dir, 'wsproxy.db') },
            api: { listen: `127.0.0.1:${this.apiPort}`, keys: API_KEY },
            limits: { rate: '0' },
            rooms: { open: '*' }, // access control has its own tests (tests/integration/test_rooms.py)
            log: { level: 'info' },
        };
        for (const [sec, kv] of Object.entries(this.sections)) conf[sec] = { ...(conf[sec] || {}), ...kv };
        let ini = '';
        for (const [sec, kv] of Object.entries(conf)) {
            ini += `[${sec}]\n`;
            for (const [k, v] of Object.entries(kv)) ini += `${k} = ${v}\n`;
        }
        this.configPath = path.join(this.dir, 'wsproxy.ini');
        fs.writeFileSync(this.configPath, ini);
        this.logPath = path.join(this.dir, 'wsproxy.log');
        return this;
    }

    get wsUrl() { return `ws://127.0.0.1:${this.port}/ws`; }

    get apiUrl() { return `http://127.0.0.1:${this.apiPort}`; }

    /** Starts the binary and waits until the API answers /healthz (the last listener bound). */
    async start() {
        if (!this.configPath) await this.init();
        const log = fs.openSync(this.logPath, 'a');
        this.proc = spawn(BIN, ['--config', this.configPath], { cwd: this.dir, stdio: ['ignore', log, log] });
        fs.closeSync(log);
        const exited = new Promise((resolve) => this.proc.once('exit', resolve));
        this.exited = exited;
        let gone = false;
        exited.then(() => { gone = true; });
        await waitFor(async () => {
            if (gone) throw new Error('wsproxy exited at start:\n' + this.log());
            try {
                return (await fetch(this.apiUrl + '/healthz')).ok;
            } catch (e) {
                return false;
            }
        }, 'wsproxy to answer /healthz');
        return this;
    }

    /** SIGKILL: no drain, no close frames; the database keeps what was committed. */
    async kill9() {
        this.proc.kill('SIGKILL');
        await this.exited;
    }

    async stop() {
        if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
        this.proc.kill('SIGTERM');
        const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
        await this.exited;
        clearTimeout(timer);
    }

    async cleanup() {
        await this.stop();
        fs.rmSync(this.dir, { recursive: true, force: true });
    }

    log() {
        try {
            return fs.readFileSync(this.logPath, 'utf8');
        } catch (e) {
            return '';
        }
    }

    /** One API call; returns {status, json}. */
    async api(method, pathAndQuery, body) {
        const res = await fetch(this.apiUrl + pathAndQuery, {
            method,
            headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
            body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await res.text();
        return { status: res.status, json: text ? JSON.parse(text) : null };
    }

    /** The value of one sample of /metrics, e.g. 'wsproxy_messages_in_total{kind="send"}' (0 if absent). */
    async metric(sample) {
        const text = await (await fetch(this.apiUrl + '/metrics')).text();
        const line = text.split('\n').find((l) => l.startsWith(sample + ' '));
        return line ? Number(line.slice(sample.length + 1)) : 0;
    }

    /** Every message of the conversation a<->b, oldest first, paging through the API. */
    async conversation(a, b) {
        const all = [];
        let before = 0;
        for (;;) {
            const q = `/api/v1/history?with=${encodeURIComponent(a)}&user=${encodeURIComponent(b)}&limit=100` +
                (before ? `&before=${before}` : '');
            const { json } = await this.api('GET', q);
            all.push(...json.items);
            if (!json.more) return all.reverse();
            before = json.items[json.items.length - 1].id;
        }
    }
}

/** A TCP relay to target that the test can break: it can swallow one direction, and cut. */
export class CuttableProxy {
    constructor(targetPort) {
        this.targetPort = targetPort;
        this.links = new Set();     /* {client, upstream, held: {up, down}} */
        this.server = net.createServer((client) => this.#relay(client));
    }

    async listen() {
        await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
        this.port = this.server.address().port;
        return this;
    }

    get wsUrl() { return `ws://127.0.0.1:${this.port}/ws`; }

    #relay(client) {
        const link = { client, upstream: net.connect(this.targetPort, '127.0.0.1'), held: { up: false, down: false } };
        this.links.add(link);
        const { upstream } = link;
        client.on('data', (d) => { if (!link.held.up) upstream.write(d); });
        upstream.on('data', (d) => { if (!link.held.down) client.write(d); });
        for (const [s, other] of [[client, upstream], [upstream, client]]) {
            s.on('error', () => {});
            s.on('close', () => {
                other.destroy();
                this.links.delete(link);
            });
        }
    }

    /** On the connections open now, bytes going 'up' (client to server) or 'down' are lost from
     * here on, as on a dying link. Later connections flow. */
    hold(direction) {
        for (const link of this.links) link.held[direction] = true;
    }

    /** Resets every connection now, as a dropped link or a crashed middlebox would. */
    cut() {
        for (const link of this.links) {
            link.client.resetAndDestroy();
            link.upstream.resetAndDestroy();
        }
        this.links.clear();
    }

    close() {
        this.cut();
        return new Promise((resolve) => this.server.close(resolve));
    }
}
