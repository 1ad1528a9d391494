/*
 * wsproxy.js -- client of the wsproxy chat protocol (docs/protocol.md) for browsers and Node 20+.
 * One ES module, no dependencies, no build step. It does the hard half of the protocol so an app does
 * not have to: reconnect with jittered backoff, resend every unreceipted send with its same cid (the
 * server's idempotency turns that into exactly one receipt), ack what reached the app, drop
 * redeliveries by message id, refresh the token in place before it expires, and pace its frames
 * under the server's rate limit.
 */

/* The protocol has no version number on the wire; this is the revision of docs/protocol.md spoken. */
export const PROTOCOL_VERSION = '1';

const DEFAULTS = Object.freeze({
    backoffBaseMs: 1000,          /* first reconnect waits 0.5-1 s, then doubles ... */
    backoffMaxMs: 30000,          /* ... up to 15-30 s */
    connectTimeoutMs: 15000,      /* socket created -> welcome, else the attempt counts as failed */
    requestTimeoutMs: 15000,      /* history, conversations, presence, members, join, leave */
    refreshAheadMs: 60000,        /* refresh this long before exp (at most a third of what is left) */
    probeTimeoutMs: 10000,        /* after ping_interval of silence a probe must be answered this fast */
    handshakeFailureLimit: 5,     /* failed opens in a row before "handshake refused" is reported */
    rate: 40,                     /* frames per second (acks excepted), under the server's default 50 */
    burst: 80,                    /* and its bucket, under the default rate_burst of 100 */
    maxFrameBytes: 1024 * 1024,   /* the server's default max_message_size: larger would close 1009 */
    seenIdsMax: 10000,            /* message ids remembered for de-duplication */
});

const NAME_MAX_BYTES = 64;        /* user ids and room names: 1-64 bytes of UTF-8, no controls */
const ID_MAX_BYTES = 128;         /* cid and rid */
const HISTORY_LIMIT_MAX = 100;
const PRESENCE_USERS_MAX = 100;
const TOKEN_MIN_VALIDITY_MS = 5000;  /* a cached token closer than this to exp is not used to connect */
const REFRESH_MIN_DELAY_MS = 1000;   /* keeps a provider that hands back the same token from spinning */
const TIMER_MAX_MS = 2 ** 31 - 1;    /* setTimeout fires at once past this (~24.8 days): refresh early */
const REFUSAL_BODY_MAX = 1024;
const PROBE_RID = 'wsproxy.js-probe';
const SLOWDOWN_SPACING_MS = 500;     /* refusals of one burst halve the pace once, not once each */
const OPEN = 1;                   /* WebSocket.OPEN in browsers, ws and undici alike */

/* ---------- errors ---------- */

/** Every error this library raises or emits. `code` is stable; `message` is for people. */
export class WsproxyError extends Error {
    constructor(code, message, details) {
        super(message);
        this.name = 'WsproxyError';
        this.code = code;
        if (details) Object.assign(this, details);
    }
}

/** An `error` frame from the server (protocol §5). `code` is the server's; `frame` the whole frame. */
export class ServerError extends WsproxyError {
    constructor(frame) {
        super(String(frame.code), typeof frame.message === 'string' ? frame.message : String(frame.code),
            { frame });
        this.name = 'ServerError';
    }
}

/**
 * The server's `forbidden` error: the room is closed and this user is not a member (join, send,
 * history, members). Only the backend (its API) or the token's "rooms" claim can let the user in.
 * `room` names the room of the refused call (null if unknown).
 */
export class ForbiddenError extends ServerError {
    constructor(frame, room) {
        super(frame);
        this.name = 'ForbiddenError';
        this.room = typeof room === 'string' ? room : null;
    }
}

/* The typed error for an error frame; room is the refused call's, when known. */
function serverError(frame, room) {
    return frame.code === 'forbidden' ? new ForbiddenError(frame, room) : new ServerError(frame);
}

/**
 * The server refused the WebSocket handshake, or attempts keep closing before the welcome.
 * In Node with the `ws` package `status` and `body` are the HTTP answer (401 "token expired", ...).
 * Browsers hide the answer from scripts: there both are null and `attempts` says how many in a row.
 */
export class HandshakeError extends WsproxyError {
    constructor(status, body, attempts) {
        super('handshake_refused', status !== null
            ? `handshake refused: HTTP ${status}${body ? ' ' + body : ''}`
            : `handshake refused: ${attempts} attempts in a row closed before the server's welcome ` +
              '(a browser cannot read the HTTP status: check the token, the Origin and the server log)',
        { status, body, attempts });
        this.name = 'HandshakeError';
    }
}

/* ---------- small helpers ---------- */

const encoder = new TextEncoder();

function utf8Length(s) {
    return encoder.encode(s).length;
}

function validName(s) {
    return typeof s === 'string' && s.length > 0 && !/[\u0000-\u001f\u007f]/.test(s) &&
        utf8Length(s) <= NAME_MAX_BYTES;
}

function validId(s) {
    return typeof s === 'string' && s.length > 0 && utf8Length(s) <= ID_MAX_BYTES;
}

function isCount(n, min, max) {
    return Number.isInteger(n) && n >= min && n <= max;
}

function badRequest(message) {
    return Promise.reject(new WsproxyError('bad_request', message));
}

/* Equal jitter: half the ceiling is fixed so retries stay spaced, half is random so a crowd spreads. */
function backoffDelay(attempt, baseMs, maxMs) {
    const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
    return Math.round(ceiling / 2 + Math.random() * ceiling / 2);
}

/* cids must not repeat across page loads or processes: the server dedupes by (user, cid) for good. */
function randomPrefix() {
    const bytes = new Uint8Array(6);
    globalThis.crypto.getRandomValues(bytes);
    return Date.now().toString(36) + '-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/* exp of a JWT in ms, read without verifying (the server verifies); null when absent or unreadable. */
function jwtExpMs(jwt) {
    const part = jwt.split('.')[1];
    if (!part) return null;
    try {
        const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
        const exp = JSON.parse(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, '='))).exp;
        return typeof exp === 'number' ? exp * 1000 : null;
    } catch (e) {
        return null;
    }
}

function normalizeToken(value) {
    if (typeof value === 'string' && value) return { token: value, exp: jwtExpMs(value) };
    if (value && typeof value.token === 'string' && value.token) {
        return { token: value.token, exp: typeof value.exp === 'number' ? value.exp : jwtExpMs(value.token) };
    }
    throw new WsproxyError('token_provider', 'the token provider must return a JWT string or {token, exp}');
}

/* A tiny emitter: EventEmitter is Node-only and EventTarget wraps values in Event objects. */
class Emitter {
    #listeners = new Map();

    on(type, fn) {
        if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
        this.#listeners.get(type).add(fn);
        return () => this.off(type, fn);
    }

    off(type, fn) {
        const set = this.#listeners.get(type);
        if (set) set.delete(fn);
    }

    /* A throwing listener must not break the client's bookkeeping (acks, resends): its exception is
     * re-thrown on its own, where the platform reports it as uncaught. */
    emit(type, value) {
        const set = this.#listeners.get(type);
        if (!set) return;
        for (const fn of Array.from(set)) {
            try {
                fn(value);
            } catch (e) {
                queueMicrotask(() => { throw e; });
            }
        }
    }
}

/* The newest message ids delivered to the app, oldest forgotten first. */
class RecentIds {
    #ids = new Set();
    #max;

    constructor(max) {
        this.#max = max;
    }

    has(id) {
        return this.#ids.has(id);
    }

    add(id) {
        if (this.#ids.has(id)) return;
        this.#ids.add(id);
        if (this.#ids.size > this.#max) this.#ids.delete(this.#ids.values().next().value);
    }
}

/* ---------- the client ---------- */

/**
 * @typedef {object} Receipt  what send() resolves with: the server stored the message
 * @property {string} cid
 * @property {number} id
 * @property {number} ts
 * @property {boolean} duplicate  true when the cid had been stored before (a resend)
 */

/**
 * Events (client.on(type, fn) returns a function that removes fn):
 *   state      {state, previous, ...}: 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';
 *              'reconnecting' carries code, reason, delayMs; 'closed' carries code, reason
 *   open       the welcome frame {session, user, ping_interval, rooms}
 *   message    a msg frame {id, from, to | room, body, ts, cid?, replay?}, once per id
 *   broadcast  {from, body, ts, cid?}
 *   presence   {user, state, last_seen} (events, not answers to presence())
 *   member     {room, user, event: 'joined' | 'left'}
 *   joined     {room, reason?}   left {room, reason?}   (any device of this user joined or left);
 *              reason is absent for the user's own join/leave, else 'added' | 'removed' |
 *              'deleted' | 'revoked' (the backend or a narrower token made the change)
 *   deleted    {id, room?}   the backend deleted message id: withdraw it from the screen
 *   replayed   {}       the replay on connect is over
 *   truncated  {room}   the replay of that room was cut: page back with history()
 *   refreshed  {exp}    the token was replaced without reconnecting
 *   error      WsproxyError | ServerError | HandshakeError not tied to a call
 */
export class WsproxyClient {
    #opt;
    #WS;
    #events = new Emitter();
    #state = 'idle';
    #ws = null;                 /* the current socket, null between sockets */
    #welcome = null;            /* the last welcome frame */
    #welcomed = false;          /* the current socket got its welcome */
    #replayed = false;          /* ... and its replay is over */
    #gen = 0;                   /* bumped per socket and on close(): stale async work compares it */
    #attempt = 0;               /* failed attempts since the last welcome: the backoff exponent */
    #failuresBeforeOpen = 0;
    #refusal = null;            /* {status, body} of the current socket's refused handshake (ws only) */
    #token = null;              /* {token, exp} used for the next connect */
    #tokenFetch = null;         /* the one provider call in flight */
    #refreshOp = null;          /* the refresh frame in flight, with the {token, exp} it carries */
    #timers = { reconnect: null, open: null, refresh: null, probe: null, pump: null, ack: null };
    #ops = new Map();           /* key -> pending call, in call order (sends, queries, joins, leaves) */
    #queue = [];                /* ops and the refresh frame waiting for the pacer */
    #bucket = { tokens: 0, at: 0, rate: 0, burst: 0, slowedAt: 0 };   /* rate and burst are learned */
    #seen;
    #ackDirect = [];            /* direct message ids to ack */
    #ackRooms = new Map();      /* room -> newest id to ack */
    #ackedRooms = new Map();    /* room -> newest id acked on this socket */
    #ownRoomIds = new Map();    /* room -> newest own receipt id, acked once the replay is over */
    #connectWaiters = [];
    #lastRx = 0;
    #seq = 0;
    #prefix = randomPrefix();
    #rooms = new Set();

    /**
     * @param {object} options
     * @param {string} options.url  the chat endpoint, e.g. 'wss://chat.example.com/ws'
     * @param {() => Promise<string | {token: string, exp?: number}>} options.token  returns a fresh
     *        JWT (exp in ms since the epoch, else read from the JWT); called to connect and to refresh
     * @param {Function} [options.WebSocket]  the WebSocket class: required in Node (`ws`), default
     *        globalThis.WebSocket
     * @param {object} [options.webSocketOptions]  third constructor argument (ws: headers, agent, ...)
     * Tuning (see DEFAULTS): backoffBaseMs, backoffMaxMs, connectTimeoutMs, requestTimeoutMs,
     * refreshAheadMs, probeTimeoutMs (0 = no probes), handshakeFailureLimit, rate, burst,
     * maxFrameBytes, seenIdsMax.
     */
    constructor(options) {
        if (!options || typeof options.url !== 'string' || !/^wss?:\/\//i.test(options.url)) {
            throw new TypeError('options.url must be a ws:// or wss:// URL');
        }
        new URL(options.url);   /* throws a TypeError now rather than at every connect */
        if (typeof options.token !== 'function') {
            throw new TypeError('options.token must be an async function returning a JWT');
        }
        this.#WS = options.WebSocket || globalThis.WebSocket;
        if (typeof this.#WS !== 'function') {
            throw new TypeError('no WebSocket class: pass options.WebSocket (in Node: the ws package\'s)');
        }
        this.#opt = { ...DEFAULTS };
        for (const key of Object.keys(DEFAULTS)) {
            if (options[key] === undefined) continue;
            if (typeof options[key] !== 'number' || !(options[key] >= 0)) {
                throw new TypeError(`options.${key} must be a non-negative number`);
            }
            this.#opt[key] = options[key];
        }
        if (!(this.#opt.rate > 0) || !(this.#opt.burst >= 1) || !(this.#opt.handshakeFailureLimit >= 1)) {
            throw new TypeError('options.rate must be > 0, burst and handshakeFailureLimit >= 1');
        }
        this.#opt.url = options.url;
        this.#opt.token = options.token;
        this.#opt.webSocketOptions = options.webSocketOptions;
        this.#seen = new RecentIds(this.#opt.seenIdsMax);
        this.#bucket.rate = this.#opt.rate;
        this.#bucket.burst = this.#opt.burst;
    }

    /* ---------- public API ---------- */

    get state() { return this.#state; }

    /** The user id from the welcome, null before the first one. */
    get user() { return this.#welcome ? this.#welcome.user : null; }

    /** The session id of the current connection (a string), null when not open. */
    get session() { return this.#welcomed ? this.#welcome.session : null; }

    /** The rooms this user is in, by name, as of the last welcome, joined and left. */
    get rooms() { return Array.from(this.#rooms).sort(); }

    on(type, fn) { return this.#events.on(type, fn); }

    off(type, fn) { this.#events.off(type, fn); }

    /**
     * Starts connecting (and reconnecting, until close()). Resolves with the welcome frame of the
     * next open connection; failures are retried and reported through 'error' and 'state' events.
     */
    connect() {
        if (this.#state === 'open') return Promise.resolve(this.#welcome);
        const waiter = {};
        const waiting = new Promise((resolve, reject) => Object.assign(waiter, { resolve, reject }));
        waiter.promise = waiting;
        this.#connectWaiters.push(waiter);
        if (this.#state === 'idle' || this.#state === 'closed') {
            this.#attempt = 0;
            this.#failuresBeforeOpen = 0;
            this.#openSocket();
        }
        return waiting;
    }

    /** While waiting to reconnect, tries now (a "Retry" button, the browser's 'online' event). */
    reconnectNow() {
        if (this.#state !== 'reconnecting') return;
        clearTimeout(this.#timers.reconnect);
        this.#timers.reconnect = null;
        this.#openSocket();
    }

    /** Closes for good: no reconnect; pending calls reject with code 'closed'. connect() again is allowed. */
    close() {
        if (this.#state === 'idle' || this.#state === 'closed') return;
        this.#shutdown(new WsproxyError('closed', 'the client was closed'), 1000, 'client close');
    }

    /**
     * Sends a message to a user ({to}) or a room ({room}). Resolves with the receipt once the server
     * has stored it; survives reconnects (the send is repeated with its cid until a receipt comes).
     * Give your own cid to make a retry across page loads idempotent too. Rejects with a ServerError
     * (not_member, too_large, ...) or with code 'closed' / 'kicked'.
     * @returns {Promise<Receipt>}
     */
    send({ to, room, body, cid } = {}) {
        if ((to === undefined) === (room === undefined)) return badRequest('send needs exactly one of to and room');
        if (!validName(to === undefined ? room : to)) {
            return badRequest('to or room must be 1-64 bytes of UTF-8 without control characters');
        }
        if (body === undefined) return badRequest('send needs a body');
        if (cid === undefined) cid = this.#nextId('c');
        else if (!validId(cid)) return badRequest('cid must be a string of 1-128 bytes');
        const key = 'c:' + cid;
        if (this.#ops.has(key)) return this.#ops.get(key).promise;
        const frame = to !== undefined ? { type: 'send', to, body, cid } : { type: 'send', room, body, cid };
        let text;
        try {
            text = JSON.stringify(frame);
        } catch (e) {
            return badRequest('body cannot be encoded as JSON: ' + e.message);
        }
        if (utf8Length(text) > this.#opt.maxFrameBytes) {
            return Promise.reject(new WsproxyError('too_large', `the send is over ${this.#opt.maxFrameBytes} bytes`));
        }
        return this.#addOp('send', key, frame, 0);
    }

    /**
     * Joins a room (all this user's devices start receiving it). Resolves when the server confirms;
     * rejects with a ForbiddenError when the room is closed to this user.
     */
    join(room) {
        if (!validName(room)) return badRequest('room must be 1-64 bytes of UTF-8 without control characters');
        return this.#addOp('join', 'j:' + this.#nextId('j'), { type: 'join', room }, this.#opt.requestTimeoutMs);
    }

    /** Leaves a room. Rejects with ServerError not_member when this user was not in it. */
    leave(room) {
        if (!validName(room)) return badRequest('room must be 1-64 bytes of UTF-8 without control characters');
        return this.#addOp('leave', 'l:' + this.#nextId('l'), { type: 'leave', room }, this.#opt.requestTimeoutMs);
    }

    /**
     * One page of a conversation ({with: user}) or a room ({room}), newest first. Pass the answer's
     * nextBefore as `before` for the next older page; nextBefore is null on the last page. Direct
     * messages to this user in the page are acked: the app has them now, so they stop being replayed.
     * @returns {Promise<{items: object[], more: boolean, nextBefore: number|null}>}
     */
    history({ with: peer, room, before, limit } = {}) {
        if ((peer === undefined) === (room === undefined)) return badRequest('history needs exactly one of with and room');
        if (!validName(peer === undefined ? room : peer)) return badRequest('with or room is not a valid name');
        if (before !== undefined && before !== null && !isCount(before, 0, Number.MAX_SAFE_INTEGER)) {
            return badRequest('before must be a non-negative integer');
        }
        if (limit !== undefined && !isCount(limit, 1, HISTORY_LIMIT_MAX)) return badRequest('limit must be 1 to 100');
        const frame = peer !== undefined ? { type: 'history', with: peer } : { type: 'history', room };
        if (before) frame.before = before;
        if (limit !== undefined) frame.limit = limit;
        return this.#query(frame);
    }

    /**
     * One page of this user's conversation list: rooms and direct conversations, the most recent
     * last message first. Items are {room | with, last: {id, from, ts, preview | deleted, via?},
     * unread, unread_more?}. Pass nextBefore as `before` for the next page (null on the last).
     * @returns {Promise<{items: object[], more: boolean, nextBefore: number|null}>}
     */
    conversations({ before, limit } = {}) {
        if (before !== undefined && before !== null && !isCount(before, 0, Number.MAX_SAFE_INTEGER)) {
            return badRequest('before must be a non-negative integer');
        }
        if (limit !== undefined && !isCount(limit, 1, HISTORY_LIMIT_MAX)) return badRequest('limit must be 1 to 100');
        const frame = { type: 'conversations' };
        if (before) frame.before = before;
        if (limit !== undefined) frame.limit = limit;
        return this.#query(frame);
    }

    /** The state of 1 to 100 users: [{user, state, last_seen}], in the order asked. */
    presence(users) {
        if (!Array.isArray(users) || !isCount(users.length, 1, PRESENCE_USERS_MAX) || !users.every(validName)) {
            return badRequest('users must be a list of 1 to 100 user ids');
        }
        return this.#query({ type: 'presence', users: users.slice() });
    }

    /** A room's members with their presence, [{user, state, last_seen}] by name. Members only. */
    members(room) {
        if (!validName(room)) return badRequest('room must be 1-64 bytes of UTF-8 without control characters');
        return this.#query({ type: 'members', room });
    }

    /** Sends still waiting for their receipt, in order: [{cid, to | room, body}]. */
    pendingSends() {
        const out = [];
        for (const op of this.#ops.values()) {
            if (op.kind !== 'send') continue;
            const { type, ...rest } = op.frame;
            out.push(rest);
        }
        return out;
    }

    /* ---------- connection lifecycle ---------- */

    #setState(state, info) {
        if (state === this.#state && state !== 'connecting') return;
        const previous = this.#state;
        this.#state = state;
        this.#events.emit('state', { state, previous, ...info });
    }

    #emitError(err) {
        this.#events.emit('error', err);
    }

    async #openSocket() {
        const gen = ++this.#gen;
        this.#setState('connecting', { attempt: this.#attempt });
        let token;
        try {
            token = await this.#usableToken();
        } catch (e) {
            if (gen !== this.#gen) return;
            this.#emitError(e);
            this.#retry(null, 'no token');
            return;
        }
        if (gen !== this.#gen) return;
        const url = new URL(this.#opt.url);
        url.searchParams.set('token', token.token);
        let ws;
        try {
            ws = this.#opt.webSocketOptions ? new this.#WS(url.href, [], this.#opt.webSocketOptions)
                : new this.#WS(url.href);
        } catch (e) {
            this.#emitError(new WsproxyError('connect_failed', e.message, { cause: e }));
            this.#retry(null, 'connect failed');
            return;
        }
        this.#ws = ws;
        this.#refusal = null;
        ws.onmessage = (ev) => { if (this.#ws === ws) this.#onFrame(ev.data); };
        ws.onclose = (ev) => { if (this.#ws === ws) this.#onSocketEnd(ev.code, ev.reason || ''); };
        /* A browser follows an error with a close, but not every implementation does (undici in
         * Node 20 stays CONNECTING after a refused handshake): an error ends the socket here. */
        ws.onerror = () => { if (this.#ws === ws) this.#dropSocket('socket error'); };
        this.#watchRefusal(ws);
        this.#timers.open = setTimeout(() => this.#dropSocket('no welcome in time'),
            this.#opt.connectTimeoutMs);
    }

    /* Node's ws lets a client read a refused handshake's answer (browsers never can): keep it for the
     * close that follows. Registering the listener makes ws leave the request to us, so end it. */
    #watchRefusal(ws) {
        if (typeof ws.on !== 'function') return;
        ws.on('unexpected-response', (req, res) => {
            let body = '';
            const done = () => {
                if (this.#ws === ws) this.#refusal = { status: res.statusCode, body: body.trim() };
                ws.terminate();
            };
            res.setEncoding('utf8');
            res.on('data', (chunk) => { if (body.length < REFUSAL_BODY_MAX) body += chunk; });
            res.on('end', done);
            res.on('error', done);
        });
    }

    async #usableToken() {
        const t = this.#token;
        if (t && (t.exp === null || t.exp - Date.now() > TOKEN_MIN_VALIDITY_MS)) return t;
        this.#token = await this.#fetchToken();
        return this.#token;
    }

    /* One provider call at a time: a refresh and a reconnect that both need a token share it. */
    #fetchToken() {
        if (!this.#tokenFetch) {
            this.#tokenFetch = (async () => {
                try {
                    return normalizeToken(await this.#opt.token());
                } catch (e) {
                    throw e instanceof WsproxyError ? e
                        : new WsproxyError('token_provider', 'the token provider failed: ' + (e && e.message), { cause: e });
                } finally {
                    this.#tokenFetch = null;
                }
            })();
        }
        return this.#tokenFetch;
    }

    #onWelcome(f) {
        clearTimeout(this.#timers.open);
        this.#welcome = f;
        this.#welcomed = true;
        this.#replayed = false;
        this.#attempt = 0;
        this.#failuresBeforeOpen = 0;
        this.#rooms = new Set(Array.isArray(f.rooms) ? f.rooms : []);
        this.#bucket.tokens = this.#bucket.burst;
        this.#bucket.at = Date.now();
        /* Everything unanswered goes (again) in call order: a send with its same cid, so one that was
         * stored before the drop just gets its first receipt back. */
        this.#queue = Array.from(this.#ops.values());
        this.#setState('open', { session: f.session });
        this.#events.emit('open', f);
        for (const w of this.#connectWaiters.splice(0)) w.resolve(f);
        this.#scheduleRefresh();
        this.#armProbe();
        this.#pump();
    }

    /* The one path for a socket that ended, whoever noticed first. */
    #onSocketEnd(code, reason) {
        const welcomed = this.#welcomed;
        const refusal = this.#refusal;
        this.#forgetSocket();
        if (!welcomed) {
            this.#failuresBeforeOpen += 1;
            const n = this.#failuresBeforeOpen;
            if (refusal) this.#emitError(new HandshakeError(refusal.status, refusal.body || null, n));
            else if (n % this.#opt.handshakeFailureLimit === 0) this.#emitError(new HandshakeError(null, null, n));
            /* A browser cannot tell a 401 from a network error, and a new token costs little. */
            if (!refusal || refusal.status === 401) this.#token = null;
        }
        if (code === 1008 && reason === 'kicked') {
            this.#shutdown(new WsproxyError('kicked', 'an operator ended this session'), code, reason);
            return;
        }
        if (code === 1008 && reason === 'token expired') this.#token = null;
        if (code === 1008 && reason === 'rate limited') this.#slowDown();
        this.#retry(code, reason);
    }

    #retry(code, reason) {
        const delayMs = backoffDelay(this.#attempt, this.#opt.backoffBaseMs, this.#opt.backoffMaxMs);
        this.#attempt += 1;
        this.#setState('reconnecting', { code, reason, delayMs });
        clearTimeout(this.#timers.reconnect);
        this.#timers.reconnect = setTimeout(() => this.#openSocket(), delayMs);
    }

    /* Gives up on the current socket now, without waiting for a close handshake a dead link never
     * completes. */
    #dropSocket(reason) {
        const ws = this.#ws;
        if (!ws) return;
        this.#onSocketEnd(1006, reason);   /* first: the socket's own last events are then ignored */
        try {
            if (typeof ws.terminate === 'function') ws.terminate(); else ws.close();
        } catch (e) { /* already closing */ }
    }

    /* Per-socket state goes; the ops stay for the next socket. */
    #forgetSocket() {
        const ws = this.#ws;
        this.#ws = null;
        if (ws) {
            ws.onmessage = null;
            ws.onclose = null;
            ws.onerror = () => {};   /* ws throws on an 'error' nobody listens to */
        }
        this.#welcomed = false;
        this.#replayed = false;
        for (const name of ['open', 'probe', 'pump', 'ack', 'refresh']) {
            clearTimeout(this.#timers[name]);
            this.#timers[name] = null;
        }
        if (this.#refreshOp) {
            this.#token = this.#refreshOp.token;  /* newer than the one we connected with */
            this.#refreshOp = null;
        }
        this.#queue = [];
        this.#ackDirect = [];
        this.#ackRooms.clear();
        this.#ackedRooms.clear();
        this.#ownRoomIds.clear();
        this.#refusal = null;
    }

    #shutdown(err, code, reason) {
        this.#gen += 1;
        const ws = this.#ws;
        this.#forgetSocket();
        if (ws) {
            try { ws.close(1000); } catch (e) { /* already closed */ }
        }
        clearTimeout(this.#timers.reconnect);
        this.#timers.reconnect = null;
        /* A caller that awaits still gets the rejection; one that fired and forgot does not get an
         * unhandled rejection (fatal in Node) just because the client was closed. */
        for (const op of this.#ops.values()) {
            clearTimeout(op.timer);
            op.promise.catch(() => {});
            op.reject(err);
        }
        this.#ops.clear();
        for (const w of this.#connectWaiters.splice(0)) {
            w.promise.catch(() => {});
            w.reject(err);
        }
        this.#setState('closed', { code, reason });
    }

    /* ---------- frames from the server ---------- */

    #onFrame(data) {
        if (typeof data !== 'string') return;   /* the server only speaks text */
        this.#lastRx = Date.now();
        let f;
        try {
            f = JSON.parse(data);
        } catch (e) {
            return;
        }
        if (!f || typeof f !== 'object' || typeof f.type !== 'string') return;
        switch (f.type) {
        case 'welcome': this.#onWelcome(f); break;
        case 'msg': this.#onMsg(f); break;
        case 'sent': this.#onSent(f); break;
        case 'error': this.#onServerError(f); break;
        case 'history':
        case 'conversations':
        case 'members': this.#onAnswer(f); break;
        case 'presence':
            if (typeof f.rid === 'string') this.#onAnswer(f);
            else this.#events.emit('presence', f);
            break;
        case 'joined':
        case 'left': this.#onRoomChange(f); break;
        case 'replayed': this.#onReplayed(f); break;
        case 'refreshed': this.#onRefreshed(f); break;
        case 'deleted':
            if (typeof f.id === 'number') this.#events.emit('deleted', f);
            break;
        case 'member':
        case 'broadcast':
        case 'truncated': this.#events.emit(f.type, f); break;
        default: break;   /* clients must ignore what they do not know (protocol §2) */
        }
    }

    #onMsg(f) {
        if (typeof f.id !== 'number') return;
        /* At least once: a message comes again after a lost ack or on a second device's replay. */
        if (!this.#seen.has(f.id)) {
            this.#seen.add(f.id);
            this.#events.emit('message', f);
        }
        this.#noteAck(f);   /* a redelivery is acked again, or it keeps coming back */
    }

    #onSent(f) {
        if (typeof f.cid !== 'string' || typeof f.id !== 'number') return;
        const op = this.#ops.get('c:' + f.cid);
        if (!op) return;    /* a second receipt for a send repeated after a rate_limited */
        this.#finish(op);
        /* Our own message is not news to us if a replay brings it back. */
        this.#seen.add(f.id);
        const room = op.frame.room;
        if (room !== undefined) {
            /* Move our cursor past our own room message, but only after the replay: before it, the
             * room's older messages may still be on their way, and a cursor past them skips them. */
            if (this.#replayed) this.#noteAck({ id: f.id, room });
            else this.#ownRoomIds.set(room, Math.max(f.id, this.#ownRoomIds.get(room) || 0));
        }
        op.resolve({ cid: f.cid, id: f.id, ts: f.ts, duplicate: f.duplicate === true });
    }

    #onReplayed(f) {
        this.#replayed = true;
        for (const [room, id] of this.#ownRoomIds) this.#noteAck({ id, room });
        this.#ownRoomIds.clear();
        this.#events.emit('replayed', f);
    }

    #onAnswer(f) {
        const op = typeof f.rid === 'string' ? this.#ops.get('r:' + f.rid) : undefined;
        if (!op) return;    /* a probe's answer, or a late one after a timeout */
        if (f.type === 'presence') {
            /* one frame per user asked */
            op.answers.push({ user: f.user, state: f.state, last_seen: f.last_seen });
            if (op.answers.length < op.frame.users.length) return;
            this.#finish(op);
            op.resolve(op.answers);
        } else if (f.type === 'members') {
            this.#finish(op);
            op.resolve(Array.isArray(f.users) ? f.users : []);
        } else if (f.type === 'conversations') {
            this.#finish(op);
            const more = f.more === true;
            op.resolve({ items: Array.isArray(f.items) ? f.items : [], more,
                nextBefore: more && typeof f.next_before === 'number' ? f.next_before : null });
        } else {
            this.#finish(op);
            const items = Array.isArray(f.items) ? f.items : [];
            for (const m of items) {
                if (m && typeof m.id === 'number' && m.room === undefined) this.#noteAck(m);
            }
            const more = f.more === true;
            op.resolve({ items, more, nextBefore: more && items.length ? items[items.length - 1].id : null });
        }
    }

    #onRoomChange(f) {
        if (typeof f.room !== 'string') return;
        if (f.type === 'joined') this.#rooms.add(f.room); else this.#rooms.delete(f.room);
        const kind = f.type === 'joined' ? 'join' : 'leave';
        for (const op of Array.from(this.#ops.values())) {
            if (op.kind === kind && op.frame.room === f.room) {
                this.#finish(op);
                op.resolve();
            }
        }
        this.#events.emit(f.type, f);
    }

    #onServerError(f) {
        const op = typeof f.cid === 'string' ? this.#ops.get('c:' + f.cid)
            : typeof f.rid === 'string' ? this.#ops.get('r:' + f.rid) : undefined;
        const err = serverError(f, op ? op.frame.room : null);
        if (op && f.code === 'internal' && op.kind === 'send') {
            /* the store failed on this one: nothing was stored, the same cid goes again later */
            this.#queueLater(op);
            return;
        }
        if (op) {
            this.#finish(op);
            op.reject(err);
            return;
        }
        /* The server gives the remaining errors no cid or rid; their cause is known by code. */
        if (f.code === 'rate_limited') {
            this.#onRateLimited();
            return;
        }
        if (f.code === 'unauthorized' && this.#refreshOp) {
            this.#refreshOp = null;
            this.#emitError(err);
            this.#retryRefresh();
            return;
        }
        if (f.code === 'not_member' && this.#answerLeave(err)) return;
        if (f.code === 'forbidden' && this.#answerJoin(f)) return;
        this.#emitError(err);
    }

    /* A refused join carries no id: the server answers frames in order, so it belongs to the oldest
     * join sent and not yet answered (a successful one is answered by its joined). */
    #answerJoin(f) {
        for (const op of this.#ops.values()) {
            if (op.kind !== 'join' || op.transmits === 0) continue;
            this.#finish(op);
            op.reject(serverError(f, op.frame.room));
            return true;
        }
        return false;
    }

    /* A leave gets not_member when we were not in the room. If it was sent more than once (a resend
     * after a drop or a rate limit), the earlier copy may have done the leaving: that is success. */
    #answerLeave(err) {
        for (const op of this.#ops.values()) {
            if (op.kind !== 'leave' || op.transmits === 0) continue;
            this.#finish(op);
            if (op.transmits > 1) op.resolve(); else op.reject(err);
            return true;
        }
        return false;
    }

    /* ---------- calls that wait for an answer ---------- */

    #nextId(kind) {
        this.#seq += 1;
        return kind + this.#prefix + '-' + this.#seq;
    }

    #query(frame) {
        const rid = this.#nextId('r');
        frame.rid = rid;
        return this.#addOp('query', 'r:' + rid, frame, this.#opt.requestTimeoutMs);
    }

    /* Calls made before connect() wait for the first connection; after close() they are refused. */
    #addOp(kind, key, frame, timeoutMs) {
        if (this.#state === 'closed') return Promise.reject(new WsproxyError('closed', 'the client is closed'));
        const op = { kind, key, frame, transmits: 0, answers: [], timer: null };
        op.promise = new Promise((resolve, reject) => {
            op.resolve = resolve;
            op.reject = reject;
        });
        if (timeoutMs) {
            op.timer = setTimeout(() => {
                if (this.#ops.get(key) !== op) return;
                this.#ops.delete(key);
                op.reject(new WsproxyError('timeout', `${frame.type} got no answer within ${timeoutMs} ms`));
            }, timeoutMs);
        }
        this.#ops.set(key, op);
        if (this.#welcomed) {
            this.#queue.push(op);
            this.#pump();
        }
        return op.promise;
    }

    #finish(op) {
        clearTimeout(op.timer);
        this.#ops.delete(op.key);
    }

    #queueLater(op) {
        const ws = this.#ws;
        const delay = backoffDelay(0, this.#opt.backoffBaseMs, this.#opt.backoffMaxMs);
        setTimeout(() => {
            if (this.#ws !== ws || this.#ops.get(op.key) !== op) return;   /* a reconnect resends it */
            this.#queue.push(op);
            this.#pump();
        }, delay);
    }

    /* ---------- pacing: a token bucket like the server's, so a long resend is not refused ---------- */

    #pump() {
        clearTimeout(this.#timers.pump);
        this.#timers.pump = null;
        const ws = this.#ws;
        if (!this.#welcomed || !ws || ws.readyState !== OPEN) return;
        const b = this.#bucket;
        const now = Date.now();
        b.tokens = Math.min(b.burst, b.tokens + (now - b.at) * b.rate / 1000);
        b.at = now;
        while (this.#queue.length && b.tokens >= 1) {
            const op = this.#queue.shift();
            if (op !== this.#refreshOp && this.#ops.get(op.key) !== op) continue;   /* answered meanwhile */
            op.transmits += 1;
            op.answers = [];
            ws.send(JSON.stringify(op.frame));
            b.tokens -= 1;
        }
        if (this.#queue.length) {
            this.#timers.pump = setTimeout(() => this.#pump(), Math.ceil((1 - b.tokens) * 1000 / b.rate));
        }
    }

    /* The server dropped one of our frames without saying which: slow down and send every unanswered
     * call again (sends by cid and queries are idempotent; a second answer is ignored). */
    #onRateLimited() {
        this.#slowDown();
        this.#bucket.tokens = 0;
        this.#bucket.at = Date.now();
        this.#queue = (this.#refreshOp ? [this.#refreshOp] : []).concat(Array.from(this.#ops.values()));
        this.#pump();
    }

    /* The server is configured tighter than our pace: halve it, for this client's lifetime. */
    #slowDown() {
        const b = this.#bucket;
        const now = Date.now();
        if (now - b.slowedAt < SLOWDOWN_SPACING_MS) return;
        b.slowedAt = now;
        b.rate = Math.max(1, b.rate / 2);
        b.burst = Math.max(1, Math.floor(b.burst / 2));
    }

    /* ---------- acks: after the app's listeners have run, batched per event-loop turn ---------- */

    #noteAck(m) {
        if (typeof m.room === 'string') {
            if (m.id <= (this.#ackedRooms.get(m.room) || 0) || m.id <= (this.#ackRooms.get(m.room) || 0)) return;
            this.#ackRooms.set(m.room, m.id);   /* a room cursor is a max: the newest id is enough */
        } else if (m.to === this.user) {
            this.#ackDirect.push(m.id);
        } else {
            return;     /* our own direct message seen from another device: not ours to ack */
        }
        if (!this.#timers.ack) this.#timers.ack = setTimeout(() => this.#flushAcks(), 0);
    }

    /* Acks are exempt from the rate limit, so they skip the pacer. If the socket is gone they are
     * dropped: the next replay brings the messages back, de-duplicated, and they are acked then. */
    #flushAcks() {
        this.#timers.ack = null;
        const ws = this.#ws;
        if (!this.#welcomed || !ws || ws.readyState !== OPEN) return;
        for (const id of this.#ackDirect) ws.send(JSON.stringify({ type: 'ack', id }));
        for (const [room, id] of this.#ackRooms) {
            ws.send(JSON.stringify({ type: 'ack', id }));
            this.#ackedRooms.set(room, id);
        }
        this.#ackDirect = [];
        this.#ackRooms.clear();
    }

    /* ---------- token refresh in place (protocol §6) ---------- */

    #scheduleRefresh() {
        clearTimeout(this.#timers.refresh);
        this.#timers.refresh = null;
        const exp = this.#token && this.#token.exp;
        if (!exp) return;
        const left = exp - Date.now();
        const ahead = Math.min(this.#opt.refreshAheadMs, left / 3);
        this.#timers.refresh = setTimeout(() => this.#refresh(),
            Math.min(TIMER_MAX_MS, Math.max(REFRESH_MIN_DELAY_MS, left - ahead)));
    }

    async #refresh() {
        this.#timers.refresh = null;
        const gen = this.#gen;
        const ws = this.#ws;
        let token;
        try {
            token = await this.#fetchToken();
        } catch (e) {
            if (gen !== this.#gen || this.#ws !== ws) return;
            this.#emitError(e);
            this.#retryRefresh();
            return;
        }
        if (gen !== this.#gen || this.#ws !== ws || !this.#welcomed) return;   /* a new socket connects with its own */
        this.#refreshOp = { key: 'refresh', frame: { type: 'refresh', token: token.token }, token, transmits: 0 };
        this.#queue.unshift(this.#refreshOp);
        this.#pump();
    }

    #onRefreshed(f) {
        if (!this.#refreshOp) return;   /* the second answer to a refresh repeated after a rate limit */
        this.#token = { token: this.#refreshOp.token.token, exp: typeof f.exp === 'number' ? f.exp : null };
        this.#refreshOp = null;
        this.#scheduleRefresh();
        this.#events.emit('refreshed', f);
    }

    /* Until the deadline the old token holds; past it the server closes with 1008 "token expired"
     * and the reconnect asks the provider again. */
    #retryRefresh() {
        const exp = this.#token && this.#token.exp;
        const left = exp ? exp - Date.now() : this.#opt.refreshAheadMs;
        if (left <= 0) return;
        clearTimeout(this.#timers.refresh);
        this.#timers.refresh = setTimeout(() => this.#refresh(),
            Math.max(REFRESH_MIN_DELAY_MS, Math.min(this.#opt.backoffMaxMs, left / 3)));
    }

    /* ---------- dead-link probe ---------- */

    /* A half-open TCP connection looks open forever, and scripts never see the server's pings. After
     * ping_interval without a frame, ask something small; no answer in probeTimeoutMs = dead link. */
    #armProbe() {
        clearTimeout(this.#timers.probe);
        this.#timers.probe = null;
        const pingMs = (this.#welcome.ping_interval || 0) * 1000;
        if (!this.#opt.probeTimeoutMs || !pingMs) return;
        const quiet = Date.now() - this.#lastRx;
        this.#timers.probe = setTimeout(() => this.#probe(pingMs), Math.max(0, pingMs - quiet));
    }

    #probe(pingMs) {
        const ws = this.#ws;
        if (!this.#welcomed || !ws) return;
        if (Date.now() - this.#lastRx < pingMs) {
            this.#armProbe();
            return;
        }
        const askedAt = Date.now();
        ws.send(JSON.stringify({ type: 'presence', users: [this.user], rid: PROBE_RID }));
        this.#timers.probe = setTimeout(() => {
            if (this.#lastRx >= askedAt) this.#armProbe();
            else this.#dropSocket('no answer to a probe');
        }, this.#opt.probeTimeoutMs);
    }
}
