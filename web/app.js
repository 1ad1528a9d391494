/* wsproxy demo chat client: demo login, one WebSocket with backoff reconnect, rooms, direct
 * messages, history paging, offline-replay marking and acks. No framework, no build step; user
 * data only ever reaches the DOM through textContent and dataset, never innerHTML. */
'use strict';

(function () {
    const BACKOFF_BASE_MS = 1000;
    const BACKOFF_CAP_MS = 30000;
    const HISTORY_PAGE = 50;
    const TOKEN_REFRESH_AHEAD_MS = 60000;   /* renew the demo token this long before it expires */
    const WATCHDOG_GRACE_MS = 10000;        /* a probe unanswered this long means a dead link */
    const ACK_RATE = 20;                    /* acks per second, well under the server's default 50 */
    const ACK_BURST = 40;
    const DEFAULT_ROOM = 'lobby';
    const NAME_MAX_BYTES = 64;              /* the server's rule for user and room names */

    const $ = (id) => document.getElementById(id);
    const el = {};
    [
        'me', 'state', 'state-text', 'retry', 'logout', 'login-view', 'login-form', 'name', 'login',
        'login-error', 'chat-view', 'rooms', 'join-form', 'join-room', 'dms', 'dm-form', 'dm-user',
        'people', 'online-count', 'conv-title', 'conv-sub', 'leave', 'messages', 'compose-form',
        'compose', 'send', 'toast',
    ].forEach((id) => { el[id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = $(id); });

    /* One object holds the session so logout can drop it whole. */
    function freshSession() {
        return {
            me: null,
            token: null,
            exp: 0,
            ws: null,
            welcomed: false,
            stopped: true,          /* logged out: never reconnect */
            attempt: 0,             /* failed connects since the last welcome */
            needToken: false,       /* fetch a new token before the next connect */
            retryTimer: null,
            tickTimer: null,
            retryAt: 0,
            refreshTimer: null,
            watchdog: null,
            lastFrameAt: 0,
            pingMs: 25000,
            replayCount: 0,
            convs: new Map(),       /* "room:NAME" | "dm:NAME" -> conversation */
            active: null,
            users: new Map(),       /* name -> {state, lastSeen} */
            members: new Map(),     /* room -> Set of names */
            seen: new Map(),        /* message id -> element: at-least-once delivery, show once */
            acked: new Set(),       /* direct message ids acked on the current connection */
            ackQueue: [],           /* direct message ids waiting for their turn */
            roomAckDue: new Map(),  /* room -> newest id shown, not acked yet */
            roomAcked: new Map(),   /* room -> newest id acked on the current connection */
            ackTimer: null,
            ackBucket: { tokens: ACK_BURST, at: 0, rate: ACK_RATE },
            pending: new Map(),     /* cid -> {frame, conv, node, sent} */
            requests: new Map(),    /* rid -> callback for history/members/presence answers */
            seq: 0,
            /* cids must not repeat across page loads: the server dedupes sends by (user, cid) */
            tab: Date.now().toString(36) + Math.random().toString(36).slice(2, 8),
        };
    }
    let S = freshSession();

    /* ---------- small helpers ---------- */

    function validName(s) {
        return typeof s === 'string' && s.length > 0 && !/[\u0000-\u001f\u007f]/.test(s) &&
            new TextEncoder().encode(s).length <= NAME_MAX_BYTES;
    }

    function node(tag, cls, text) {
        const n = document.createElement(tag);
        if (cls) n.className = cls;
        if (text !== undefined && text !== null) n.textContent = text;
        return n;
    }

    function nextId(prefix) {
        S.seq += 1;
        return prefix + S.tab + '-' + S.seq;
    }

    function bodyText(body) {
        if (typeof body === 'string') return body;
        try { return JSON.stringify(body); } catch (e) { return String(body); }
    }

    function fmtTime(ts) {
        if (!ts) return '';
        const d = new Date(ts);
        const now = new Date();
        const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
        if (d.toDateString() === now.toDateString()) return hm;
        return d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + hm;
    }

    function fmtAgo(ts) {
        if (!ts) return '';
        const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
        if (s < 60) return 'just now';
        if (s < 3600) return Math.round(s / 60) + ' min ago';
        if (s < 86400) return Math.round(s / 3600) + ' h ago';
        return new Date(ts).toLocaleDateString();
    }

    let toastTimer = null;
    function toast(text, kind) {
        el.toast.textContent = text;
        el.toast.dataset.kind = kind || 'info';
        el.toast.hidden = false;
        clearTimeout(toastTimer);
        toastTimer = setTimeout(() => { el.toast.hidden = true; }, 5000);
    }

    function roomsKey() { return 'wsp.rooms.' + S.me; }

    function savedRooms() {
        try {
            const v = JSON.parse(localStorage.getItem(roomsKey()) || '[]');
            return Array.isArray(v) ? v.filter(validName) : [];
        } catch (e) {
            return [];
        }
    }

    function saveRooms() {
        const rooms = [];
        S.convs.forEach((c) => { if (c.kind === 'room' && c.joined) rooms.push(c.name); });
        try { localStorage.setItem(roomsKey(), JSON.stringify(rooms)); } catch (e) { /* private mode */ }
    }

    /* ---------- connection state ---------- */

    function setState(state, text) {
        el.state.dataset.state = state;
        el.stateText.textContent = text;
        el.retry.hidden = state !== 'reconnecting';
        el.compose.placeholder = state === 'online' ? 'Write a message…'
            : 'Write a message… (sent when back online)';
    }

    function isOnline() {
        return S.ws && S.ws.readyState === WebSocket.OPEN && S.welcomed;
    }

    function sendFrame(frame) {
        if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
        S.ws.send(JSON.stringify(frame));
        return true;
    }

    /* Presence answers come one frame per user asked, so a request may expect several. */
    function request(frame, onReply, answers) {
        frame.rid = nextId('r');
        S.requests.set(frame.rid, { cb: onReply, left: answers || 1 });
        if (!sendFrame(frame)) {
            S.requests.delete(frame.rid);
            return false;
        }
        return true;
    }

    async function fetchToken(name) {
        const res = await fetch('/demo/token?user=' + encodeURIComponent(name), { cache: 'no-store' });
        if (!res.ok) {
            const why = res.status === 404 ? 'Demo login is disabled on this server.'
                : res.status === 400 ? 'That name is not allowed.'
                    : 'Login failed (HTTP ' + res.status + ').';
            const err = new Error(why);
            err.status = res.status;
            throw err;
        }
        const j = await res.json();
        if (!j || typeof j.token !== 'string') throw new Error('Login failed: bad token reply.');
        S.token = j.token;
        S.exp = typeof j.exp === 'number' ? j.exp : 0;
        S.needToken = false;
        scheduleTokenRefresh();
        return j;
    }

    /* Renew before expiry so a long session is not cut with 1008 "token expired". */
    function scheduleTokenRefresh() {
        clearTimeout(S.refreshTimer);
        if (!S.exp || S.stopped) return;
        const delay = Math.max(5000, S.exp - Date.now() - TOKEN_REFRESH_AHEAD_MS);
        S.refreshTimer = setTimeout(async () => {
            try {
                await fetchToken(S.me);
                if (isOnline()) sendFrame({ type: 'refresh', token: S.token });
            } catch (e) {
                S.refreshTimer = setTimeout(scheduleTokenRefresh, 30000);
            }
        }, delay);
    }

    function wsUrl() {
        const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
        return proto + '//' + location.host + '/ws?token=' + encodeURIComponent(S.token);
    }

    function connect() {
        clearTimeout(S.retryTimer);
        clearInterval(S.tickTimer);
        S.retryTimer = null;
        setState('connecting', S.attempt ? 'Reconnecting…' : 'Connecting…');
        let ws;
        try {
            ws = new WebSocket(wsUrl());
        } catch (e) {
            scheduleReconnect();
            return;
        }
        S.ws = ws;
        S.welcomed = false;
        ws.onmessage = (ev) => {
            if (S.ws !== ws) return;
            S.lastFrameAt = Date.now();
            let f;
            try { f = JSON.parse(ev.data); } catch (e) { return; }
            if (f && typeof f === 'object') dispatch(f);
        };
        ws.onclose = (ev) => {
            if (S.ws !== ws) return;
            onClosed(ev);
        };
    }

    function onClosed(ev) {
        const wasWelcomed = S.welcomed;
        S.ws = null;
        S.welcomed = false;
        delete el.state.dataset.replayed;
        clearInterval(S.watchdog);
        resetAcks();
        S.requests.clear();
        S.convs.forEach((c) => {
            if (c.history === 'loading') c.history = 'none';
            c.loadingOlder = false;
            renderLoadOlder(c);
        });
        /* Sent but never receipted: it may or may not be stored. The server keeps one message per
         * (sender, cid), so sending it again with the same cid after reconnecting is safe. */
        S.pending.forEach((p) => {
            if (!p.sent) return;
            p.sent = false;
            p.node.querySelector('.label').textContent = 'waiting for connection…';
        });
        if (S.stopped) {
            setState('offline', 'Offline');
            return;
        }
        if (ev.code === 1008 && /token expired/i.test(ev.reason || '')) {
            S.needToken = true;
            toast('Session token expired, getting a new one…');
        } else if (!wasWelcomed) {
            /* A refused upgrade (401) shows up as 1006 with no reason; a new token costs little. */
            S.needToken = true;
        }
        if (ev.code === 1008 && ev.reason && !/token expired/i.test(ev.reason)) {
            toast('Disconnected by the server: ' + ev.reason, 'error');
        }
        scheduleReconnect();
    }

    /* Exponential backoff with jitter, capped; the attempt count resets on welcome. */
    function scheduleReconnect() {
        if (S.stopped) return;
        const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, S.attempt));
        const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
        S.attempt += 1;
        S.retryAt = Date.now() + delay;
        clearTimeout(S.retryTimer);
        clearInterval(S.tickTimer);
        S.retryTimer = setTimeout(reconnectNow, delay);
        const tick = () => {
            const left = Math.max(1, Math.ceil((S.retryAt - Date.now()) / 1000));
            setState('reconnecting', 'Reconnecting in ' + left + 's');
        };
        tick();
        S.tickTimer = setInterval(tick, 1000);
    }

    async function reconnectNow() {
        clearTimeout(S.retryTimer);
        clearInterval(S.tickTimer);
        S.retryTimer = null;
        if (S.stopped || S.ws) return;
        if (S.needToken || (S.exp && S.exp - Date.now() < 30000)) {
            setState('connecting', 'Renewing login…');
            try {
                await fetchToken(S.me);
            } catch (e) {
                if (e.status === 400 || e.status === 404) {
                    S.stopped = true;
                    setState('offline', 'Offline');
                    toast(e.message, 'error');
                    return;
                }
                scheduleReconnect();
                return;
            }
            if (S.stopped || S.ws) return;
        }
        connect();
    }

    /* Browsers cannot see server pings, so a silently dead link is noticed by probing it. */
    function startWatchdog() {
        clearInterval(S.watchdog);
        let probeAt = 0;
        S.watchdog = setInterval(() => {
            if (!isOnline()) return;
            const now = Date.now();
            if (probeAt && S.lastFrameAt < probeAt && now - probeAt > WATCHDOG_GRACE_MS) {
                probeAt = 0;
                S.ws.close();
                return;
            }
            if (!probeAt && now - S.lastFrameAt > S.pingMs) {
                probeAt = now;
                request({ type: 'presence', users: [S.me] }, () => { probeAt = 0; });
            } else if (probeAt && S.lastFrameAt >= probeAt) {
                probeAt = 0;
            }
        }, 2000);
    }

    /* ---------- incoming frames ---------- */

    function dispatch(f) {
        if (typeof f.rid === 'string' && S.requests.has(f.rid)) {
            const r = S.requests.get(f.rid);
            r.left -= 1;
            if (r.left <= 0 || f.type === 'error') S.requests.delete(f.rid);
            r.cb(f);
            if (f.type === 'error') onError(f);
            return;
        }
        switch (f.type) {
        case 'welcome': onWelcome(f); break;
        case 'msg': onMsg(f); break;
        case 'replayed': onReplayed(); break;
        case 'sent': onSent(f); break;
        case 'joined': onJoined(f.room); break;
        case 'left': onLeft(f.room); break;
        case 'presence': onPresence(f); break;
        case 'members': onMembers(f); break;
        case 'truncated': onTruncated(f); break;
        case 'error': onError(f); break;
        case 'member': onMember(f); break;
        case 'broadcast': toast(typeof f.body === 'string' ? f.body : JSON.stringify(f.body)); break;
        default: break;
        }
    }

    function onWelcome(f) {
        S.welcomed = true;
        S.attempt = 0;
        S.replayCount = 0;
        resetAcks();
        delete el.state.dataset.replayed;
        if (typeof f.user === 'string') S.me = f.user;
        if (typeof f.ping_interval === 'number' && f.ping_interval > 0) S.pingMs = f.ping_interval * 1000;
        S.lastFrameAt = Date.now();
        el.me.textContent = S.me;
        el.me.hidden = false;
        setState('online', 'Online');
        startWatchdog();

        const rooms = new Set([DEFAULT_ROOM].concat(savedRooms()));
        S.convs.forEach((c) => { if (c.kind === 'room' && c.joined) rooms.add(c.name); });
        rooms.forEach((r) => sendFrame({ type: 'join', room: r }));

        const peers = [];
        S.convs.forEach((c) => { if (c.kind === 'dm') peers.push(c.name); });
        if (peers.length) request({ type: 'presence', users: peers }, onPresence, peers.length);

        /* messages typed while offline go out now, in order */
        S.pending.forEach((p) => { if (!p.sent && !p.failed) transmit(p); });

        const active = S.convs.get(S.active);
        if (active && active.kind === 'dm' && active.history === 'none') loadHistory(active);
    }

    function convKeyOf(m) {
        if (typeof m.room === 'string') return 'room:' + m.room;
        const peer = m.from === S.me ? m.to : m.from;
        return 'dm:' + peer;
    }

    function onMsg(f) {
        if (typeof f.id !== 'number') return;
        if (typeof f.room !== 'string' && (typeof f.from !== 'string' || typeof f.to !== 'string')) return;
        const conv = ensureConv(convKeyOf(f));
        if (conv.kind === 'room' && !conv.joined) {
            conv.joined = true;     /* only members get room traffic */
            saveRooms();
        }
        if (f.from !== S.me) noteUser(f.from);
        if (f.from === S.me && typeof f.cid === 'string' && S.pending.has(f.cid)) {
            confirmPending(f.cid, f.id, f.ts);
        }
        if (S.seen.has(f.id)) {
            ack(f);     /* a redelivery: ack again so it is not replayed once more */
            return;
        }
        if (f.replay) S.replayCount += 1;
        const n = renderMsg(f, !!f.replay);
        placeMsg(conv, n, f.id);
        ack(f);
        conv.lastActivity = f.ts || Date.now();
        if (f.from !== S.me && (S.active !== conv.key || document.hidden)) {
            conv.unread += 1;
            renderConvItem(conv);
            renderTitle();
        }
        if (conv.kind === 'dm') bumpDm(conv);
    }

    function onReplayed() {
        el.state.dataset.replayed = 'yes';
        if (S.replayCount > 0) {
            toast(S.replayCount === 1 ? '1 message arrived while you were offline.'
                : S.replayCount + ' messages arrived while you were offline.');
        }
        S.replayCount = 0;
    }

    function onSent(f) {
        if (typeof f.cid !== 'string' || typeof f.id !== 'number') return;
        const p = S.pending.get(f.cid);
        confirmPending(f.cid, f.id, f.ts);
        /* our own room message is displayed too: move the room cursor past it */
        if (p && p.conv.kind === 'room') ack({ id: f.id, room: p.conv.name });
    }

    function onJoined(room) {
        if (typeof room !== 'string') return;
        const conv = ensureConv('room:' + room);
        conv.joined = true;
        saveRooms();
        request({ type: 'members', room: room }, onMembers);
        if (!S.active) openConv(conv.key);
        else if (S.active === conv.key && conv.history === 'none') loadHistory(conv);
        if (S.active === conv.key) renderHeader();
    }

    function onLeft(room) {
        if (typeof room !== 'string') return;
        const conv = S.convs.get('room:' + room);
        if (!conv) return;
        conv.joined = false;
        saveRooms();
        removeConv(conv);
    }

    function onPresence(f) {
        if (f.type !== 'presence' || typeof f.user !== 'string') return;
        const u = noteUser(f.user);
        const was = u.state;
        u.state = f.state === 'online' ? 'online' : 'offline';
        if (typeof f.last_seen === 'number') u.lastSeen = f.last_seen;
        if (was !== u.state) renderPeople();
    }

    function onMember(f) {
        if (typeof f.room !== 'string' || typeof f.user !== 'string') return;
        const set = S.members.get(f.room) || new Set();
        if (f.event === 'joined') {
            set.add(f.user);
            noteUser(f.user).state = 'online';
        } else {
            set.delete(f.user);
        }
        S.members.set(f.room, set);
        renderPeople();
    }

    function onMembers(f) {
        if (f.type !== 'members' || typeof f.room !== 'string' || !Array.isArray(f.users)) return;
        const set = new Set();
        f.users.forEach((m) => {
            if (!m || typeof m.user !== 'string') return;
            set.add(m.user);
            const u = noteUser(m.user);
            u.state = m.state === 'online' ? 'online' : 'offline';
            if (typeof m.last_seen === 'number') u.lastSeen = m.last_seen;
        });
        S.members.set(f.room, set);
        renderPeople();
    }

    function onTruncated(f) {
        if (typeof f.room !== 'string') return;
        const conv = ensureConv('room:' + f.room);
        conv.more = true;
        renderLoadOlder(conv);
        toast('Some older messages in #' + f.room + ' were skipped; use "Load older" to see them.');
    }

    function onError(f) {
        if (f.code === 'rate_limited') {
            /* a server configured tighter than our pace: halve it and let the bucket drain */
            S.ackBucket.rate = Math.max(1, S.ackBucket.rate / 2);
            S.ackBucket.tokens = 0;
            return;
        }
        if (typeof f.cid === 'string' && S.pending.has(f.cid)) {
            markFailed(S.pending.get(f.cid), f.code === 'not_member' ? 'not a member' : 'not sent');
        }
        const msg = typeof f.message === 'string' && f.message ? f.message : f.code;
        toast('Server: ' + msg, 'error');
    }

    /* Acks count against the server's per-connection rate limit like any frame, and a long replay
     * would trip it, so they are paced. A room cursor only moves forward (max), so per room only
     * the newest id shown needs acking. A direct message is acked by its recipient alone: our own
     * DMs echoed from another device of ours are not ours to ack (the server answers an error). */
    function ack(m) {
        if (typeof m.id !== 'number') return;
        if (typeof m.room === 'string') {
            if (m.id <= (S.roomAcked.get(m.room) || 0) || m.id <= (S.roomAckDue.get(m.room) || 0)) return;
            S.roomAckDue.set(m.room, m.id);
        } else if (m.to === S.me) {
            if (S.acked.has(m.id)) return;
            S.acked.add(m.id);
            S.ackQueue.push(m.id);
        } else {
            return;
        }
        if (!S.ackTimer) S.ackTimer = setTimeout(flushAcks, 20);
    }

    function flushAcks() {
        S.ackTimer = null;
        if (!isOnline()) return;    /* unacked ones come back in the next replay and are acked then */
        const now = Date.now();
        const b = S.ackBucket;
        b.tokens = Math.min(ACK_BURST, b.tokens + (now - b.at) * b.rate / 1000);
        b.at = now;
        while (b.tokens >= 1 && (S.ackQueue.length || S.roomAckDue.size)) {
            let id;
            if (S.roomAckDue.size) {
                const [room, max] = S.roomAckDue.entries().next().value;
                S.roomAckDue.delete(room);
                S.roomAcked.set(room, max);
                id = max;
            } else {
                id = S.ackQueue.shift();
            }
            sendFrame({ type: 'ack', id: id });
            b.tokens -= 1;
        }
        if (S.ackQueue.length || S.roomAckDue.size) {
            S.ackTimer = setTimeout(flushAcks, Math.ceil(1000 / b.rate));
        }
    }

    function resetAcks() {
        clearTimeout(S.ackTimer);
        S.ackTimer = null;
        S.acked.clear();
        S.ackQueue = [];
        S.roomAckDue.clear();
        S.roomAcked.clear();
    }

    /* ---------- users ---------- */

    function noteUser(name) {
        let u = S.users.get(name);
        if (!u) {
            u = { state: 'unknown', lastSeen: 0 };
            S.users.set(name, u);
            if (name !== S.me) {
                renderPeople();
                if (isOnline()) request({ type: 'presence', users: [name] }, onPresence);
            }
        }
        return u;
    }

    /* ---------- conversations ---------- */

    function ensureConv(key) {
        let c = S.convs.get(key);
        if (c) return c;
        const sep = key.indexOf(':');
        c = {
            key: key,
            kind: key.slice(0, sep),
            name: key.slice(sep + 1),
            unread: 0,
            joined: false,
            history: 'none',    /* none | loading | loaded */
            more: true,
            loadingOlder: false,
            lastActivity: 0,
            thread: node('div', 'thread'),
            list: node('div', 'msg-list'),
            older: node('button', 'load-older', 'Load older messages'),
            empty: node('div', 'empty', 'No messages yet. Say hello!'),
            item: node('li', 'conv'),
        };
        c.thread.dataset.conv = key;
        c.thread.hidden = true;
        c.older.type = 'button';
        c.older.hidden = true;
        c.older.addEventListener('click', () => loadOlder(c));
        c.thread.append(c.older, c.empty, c.list);
        el.messages.append(c.thread);

        c.item.dataset.conv = key;
        c.item.tabIndex = 0;
        c.item.setAttribute('role', 'button');
        if (c.kind === 'dm') c.item.append(node('span', 'dot'));
        else c.item.append(node('span', 'hash', '#'));
        c.item.append(node('span', 'conv-name', c.name), node('span', 'unread'));
        c.item.addEventListener('click', () => openConv(key));
        c.item.addEventListener('keydown', (e) => {
            if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); openConv(key); }
        });
        S.convs.set(key, c);
        if (c.kind === 'room') insertSorted(el.rooms, c.item, c.name);
        else {
            el.dms.prepend(c.item);
            noteUser(c.name);
        }
        renderConvItem(c);
        return c;
    }

    function insertSorted(list, item, name) {
        const after = Array.from(list.children).find((li) => {
            const other = li.querySelector('.conv-name');
            return other && other.textContent.localeCompare(name) > 0;
        });
        list.insertBefore(item, after || null);
    }

    function bumpDm(conv) {
        if (el.dms.firstChild !== conv.item) el.dms.prepend(conv.item);
    }

    function removeConv(conv) {
        conv.item.remove();
        conv.thread.remove();
        S.convs.delete(conv.key);
        if (S.active === conv.key) {
            S.active = null;
            const next = S.convs.get('room:' + DEFAULT_ROOM) || S.convs.values().next().value;
            if (next) openConv(next.key);
            else renderHeader();
        }
        renderTitle();
    }

    function openConv(key) {
        const conv = S.convs.get(key);
        if (!conv) return;
        const prev = S.convs.get(S.active);
        if (prev) {
            prev.thread.hidden = true;
            prev.item.classList.remove('active');
        }
        S.active = key;
        conv.thread.hidden = false;
        conv.item.classList.add('active');
        conv.unread = 0;
        renderConvItem(conv);
        renderTitle();
        renderHeader();
        scrollToBottom();
        if (conv.history === 'none' && (conv.kind === 'dm' || conv.joined)) loadHistory(conv);
        /* the protocol has no join events, so refresh the member list whenever a room is opened */
        if (conv.kind === 'room' && conv.joined && isOnline()) {
            request({ type: 'members', room: conv.name }, onMembers);
        }
        if (window.matchMedia('(pointer: fine)').matches) el.compose.focus();
    }

    function loadHistory(conv) {
        if (!isOnline() || conv.history === 'loading') return;
        conv.history = 'loading';
        conv.thread.dataset.history = 'loading';
        const frame = { type: 'history', limit: HISTORY_PAGE };
        if (conv.kind === 'room') frame.room = conv.name; else frame.with = conv.name;
        request(frame, (f) => {
            if (f.type === 'error') {
                conv.history = 'none';
                delete conv.thread.dataset.history;
                return;
            }
            conv.history = 'loaded';
            addHistory(conv, f);
            conv.thread.dataset.history = 'loaded';
            if (S.active === conv.key) scrollToBottom();
        });
    }

    function loadOlder(conv) {
        if (!isOnline() || conv.loadingOlder) return;
        const before = oldestId(conv);
        const frame = { type: 'history', limit: HISTORY_PAGE };
        if (conv.kind === 'room') frame.room = conv.name; else frame.with = conv.name;
        if (before !== null) frame.before = before;
        conv.loadingOlder = true;
        renderLoadOlder(conv);
        const box = el.messages;
        const fromBottom = box.scrollHeight - box.scrollTop;
        request(frame, (f) => {
            conv.loadingOlder = false;
            if (f.type !== 'error') addHistory(conv, f);
            renderLoadOlder(conv);
            /* keep the message the user was looking at in place */
            if (S.active === conv.key) box.scrollTop = box.scrollHeight - fromBottom;
        });
    }

    function addHistory(conv, f) {
        if (f.type !== 'history' || !Array.isArray(f.items)) return;
        f.items.forEach((m) => {
            if (!m || typeof m.id !== 'number') return;
            if (m.from !== S.me) noteUser(m.from);
            /* a DM to us that was never acked would come back on every connect */
            if (typeof m.room !== 'string' && m.to === S.me && m.from !== S.me) ack(m);
            if (S.seen.has(m.id)) return;
            placeMsg(conv, renderMsg(m, false), m.id);
        });
        conv.more = !!f.more;
        renderLoadOlder(conv);
    }

    function oldestId(conv) {
        const first = conv.list.querySelector('.msg[data-id]');
        return first ? Number(first.dataset.id) : null;
    }

    /* ---------- messages ---------- */

    function renderMsg(m, offline) {
        const n = node('div', 'msg');
        const mine = m.from === S.me;
        if (mine) n.classList.add('mine');
        if (offline) n.classList.add('offline');
        n.dataset.id = String(m.id);
        n.dataset.from = m.from;
        if (typeof m.ts === 'number') n.dataset.ts = String(m.ts);
        if (typeof m.cid === 'string' && mine) n.dataset.cid = m.cid;
        const meta = node('div', 'meta');
        meta.append(node('span', 'from', mine ? 'You' : m.from));
        const t = node('time', 'time', fmtTime(m.ts));
        if (m.ts) {
            t.dateTime = new Date(m.ts).toISOString();
            t.title = new Date(m.ts).toLocaleString();
        }
        meta.append(t);
        if (offline) {
            const lbl = node('span', 'label offline-label', 'received while you were offline');
            meta.append(lbl);
        }
        n.append(meta, node('div', 'body', bodyText(m.body)));
        return n;
    }

    /* Keep each thread ordered by id: history and replay may arrive around live traffic. */
    function placeMsg(conv, n, id) {
        S.seen.set(id, n);
        const box = el.messages;
        const stick = S.active === conv.key && box.scrollHeight - box.scrollTop - box.clientHeight < 80;
        const items = conv.list.children;
        let before = null;
        for (let i = items.length - 1; i >= 0; i -= 1) {
            const other = items[i];
            if (!other.dataset.id) { before = other; continue; }   /* pending ones stay last */
            if (Number(other.dataset.id) > id) before = other; else break;
        }
        conv.list.insertBefore(n, before);
        conv.empty.hidden = true;
        regroup(n);
        if (n.nextElementSibling) regroup(n.nextElementSibling);
        if (stick) scrollToBottom();
    }

    /* A run of messages from one sender within a few minutes shows its name and time once. */
    function regroup(n) {
        const prev = n.previousElementSibling;
        const ts = Number(n.dataset.ts || Date.now());
        const same = prev && prev.dataset.from === n.dataset.from &&
            prev.classList.contains('offline') === n.classList.contains('offline') &&
            Math.abs(ts - Number(prev.dataset.ts || Date.now())) < 5 * 60000;
        n.classList.toggle('cont', !!same);
    }

    function sendMessage(text) {
        const conv = S.convs.get(S.active);
        if (!conv) return;
        const cid = nextId('c');
        const frame = { type: 'send', body: text, cid: cid };
        if (conv.kind === 'room') frame.room = conv.name; else frame.to = conv.name;
        const n = node('div', 'msg mine pending');
        n.dataset.cid = cid;
        n.dataset.from = S.me;
        const meta = node('div', 'meta');
        meta.append(node('span', 'from', 'You'), node('time', 'time', ''),
            node('span', 'label pending-label', 'sending…'));
        n.append(meta, node('div', 'body', text));
        const p = { frame: frame, conv: conv, node: n, sent: false, failed: false };
        S.pending.set(cid, p);
        conv.list.append(n);
        regroup(n);
        conv.empty.hidden = true;
        conv.lastActivity = Date.now();
        if (conv.kind === 'dm') bumpDm(conv);
        scrollToBottom();
        if (isOnline()) transmit(p);
        else n.querySelector('.pending-label').textContent = 'waiting for connection…';
    }

    function transmit(p) {
        p.failed = false;
        p.node.classList.remove('failed');
        p.node.classList.add('pending');
        const lbl = p.node.querySelector('.label');
        lbl.className = 'label pending-label';
        lbl.textContent = 'sending…';
        const retry = p.node.querySelector('.retry');
        if (retry) retry.remove();
        p.sent = sendFrame(p.frame);
    }

    function markFailed(p, why) {
        p.sent = false;
        p.failed = true;
        p.node.classList.remove('pending');
        p.node.classList.add('failed');
        const lbl = p.node.querySelector('.label');
        lbl.className = 'label failed-label';
        lbl.textContent = why;
        if (!p.node.querySelector('.retry')) {
            const b = node('button', 'retry link-btn', 'Retry');
            b.type = 'button';
            b.addEventListener('click', () => {
                if (isOnline()) {
                    transmit(p);
                    return;
                }
                /* queued: onWelcome sends every unsent, unfailed message */
                p.failed = false;
                b.remove();
                p.node.classList.replace('failed', 'pending');
                lbl.className = 'label pending-label';
                lbl.textContent = 'waiting for connection…';
            });
            p.node.querySelector('.meta').append(b);
        }
    }

    function confirmPending(cid, id, ts) {
        const p = S.pending.get(cid);
        if (!p) return;
        S.pending.delete(cid);
        const n = p.node;
        if (S.seen.has(id)) {           /* the echo got here first and is already shown */
            n.remove();
            return;
        }
        n.classList.remove('pending', 'failed');
        const lbl = n.querySelector('.label');
        if (lbl) lbl.remove();
        const retry = n.querySelector('.retry');
        if (retry) retry.remove();
        n.dataset.id = String(id);
        const t = n.querySelector('.time');
        const when = typeof ts === 'number' ? ts : Date.now();
        n.dataset.ts = String(when);
        t.textContent = fmtTime(when);
        t.dateTime = new Date(when).toISOString();
        t.title = new Date(when).toLocaleString();
        const next = n.nextElementSibling;
        n.remove();
        if (next) regroup(next);
        placeMsg(p.conv, n, id);
    }

    /* ---------- rendering ---------- */

    function renderConvItem(c) {
        const badge = c.item.querySelector('.unread');
        badge.textContent = c.unread > 99 ? '99+' : String(c.unread);
        badge.hidden = c.unread === 0;
        c.item.dataset.unread = String(c.unread);
        c.item.classList.toggle('has-unread', c.unread > 0);
        if (c.kind === 'dm') {
            const u = S.users.get(c.name);
            c.item.dataset.presence = u ? u.state : 'unknown';
        }
    }

    function renderTitle() {
        let total = 0;
        S.convs.forEach((c) => { total += c.unread; });
        document.title = (total ? '(' + total + ') ' : '') + 'wsproxy chat';
    }

    function renderLoadOlder(c) {
        const show = c.history === 'loaded' && c.more;
        c.older.hidden = !show && !c.loadingOlder;
        c.older.disabled = c.loadingOlder;
        c.older.textContent = c.loadingOlder ? 'Loading…' : 'Load older messages';
        if (c.history === 'loaded' && !c.more && c.list.children.length) c.thread.dataset.start = 'yes';
        else delete c.thread.dataset.start;
    }

    function renderHeader() {
        const c = S.convs.get(S.active);
        el.composeForm.hidden = !c;
        if (!c) {
            el.convTitle.textContent = 'No conversation';
            el.convSub.textContent = 'Join a room or message someone to start.';
            el.leave.hidden = true;
            return;
        }
        el.convTitle.textContent = c.kind === 'room' ? '# ' + c.name : c.name;
        el.leave.hidden = c.kind !== 'room';
        if (c.kind === 'room') {
            const set = S.members.get(c.name);
            if (!set) {
                el.convSub.textContent = c.joined ? 'Room' : 'Joining…';
            } else {
                let on = 0;
                set.forEach((n) => { const u = S.users.get(n); if (n === S.me || (u && u.state === 'online')) on += 1; });
                el.convSub.textContent = set.size + (set.size === 1 ? ' member' : ' members') + ' · ' + on + ' online';
            }
        } else {
            const u = S.users.get(c.name);
            el.convSub.textContent = !u || u.state === 'unknown' ? 'Direct message'
                : u.state === 'online' ? 'Online'
                    : 'Offline' + (u.lastSeen ? ' · last seen ' + fmtAgo(u.lastSeen) : '');
        }
    }

    function renderPeople() {
        const names = Array.from(S.users.keys()).filter((n) => n !== S.me);
        names.sort((a, b) => {
            const sa = S.users.get(a).state === 'online' ? 0 : 1;
            const sb = S.users.get(b).state === 'online' ? 0 : 1;
            return sa - sb || a.localeCompare(b);
        });
        const frag = document.createDocumentFragment();
        let online = 0;
        names.forEach((n) => {
            const u = S.users.get(n);
            if (u.state === 'online') online += 1;
            const li = node('li', 'person');
            li.dataset.user = n;
            li.dataset.presence = u.state;
            li.tabIndex = 0;
            li.setAttribute('role', 'button');
            li.title = u.state === 'online' ? 'Online — click to message'
                : u.lastSeen ? 'Last seen ' + fmtAgo(u.lastSeen) : 'Offline';
            li.append(node('span', 'dot'), node('span', 'person-name', n));
            if (u.state !== 'online' && u.lastSeen) li.append(node('span', 'seen', fmtAgo(u.lastSeen)));
            li.addEventListener('click', () => openConv(ensureConv('dm:' + n).key));
            li.addEventListener('keydown', (e) => {
                if (e.key === 'Enter') openConv(ensureConv('dm:' + n).key);
            });
            frag.append(li);
        });
        if (!names.length) frag.append(node('li', 'muted', 'Nobody else here yet.'));
        el.people.replaceChildren(frag);
        el.onlineCount.textContent = online ? online + ' online' : '';
        S.convs.forEach((c) => { if (c.kind === 'dm') renderConvItem(c); });
        renderHeader();
    }

    function scrollToBottom() {
        el.messages.scrollTop = el.messages.scrollHeight;
    }

    /* ---------- login / logout ---------- */

    function showChat() {
        el.loginView.hidden = true;
        el.chatView.hidden = false;
        el.logout.hidden = false;
        renderPeople();
        renderHeader();
    }

    function showLogin(msg) {
        el.chatView.hidden = true;
        el.loginView.hidden = false;
        el.logout.hidden = true;
        el.me.hidden = true;
        el.login.disabled = false;
        el.loginError.hidden = !msg;
        el.loginError.textContent = msg || '';
        el.name.focus();
    }

    async function login(name) {
        el.login.disabled = true;
        el.loginError.hidden = true;
        setState('connecting', 'Logging in…');
        S.me = name;
        S.stopped = false;
        try {
            await fetchToken(name);
        } catch (e) {
            S.stopped = true;
            setState('offline', 'Offline');
            showLogin(e.status ? e.message : 'Cannot reach the server.');
            return;
        }
        try {
            localStorage.setItem('wsp.lastName', name);
            sessionStorage.setItem('wsp.name', name);
        } catch (e) { /* storage disabled */ }
        showChat();
        renderHeader();
        connect();
    }

    function logout() {
        S.stopped = true;
        clearTimeout(S.retryTimer);
        clearInterval(S.tickTimer);
        clearTimeout(S.refreshTimer);
        clearInterval(S.watchdog);
        resetAcks();
        const ws = S.ws;
        S.ws = null;
        if (ws) ws.close(1000, 'logout');
        try { sessionStorage.removeItem('wsp.name'); } catch (e) { /* storage disabled */ }
        S = freshSession();
        el.rooms.replaceChildren();
        el.dms.replaceChildren();
        el.people.replaceChildren();
        el.messages.replaceChildren();
        renderTitle();
        setState('offline', 'Offline');
        showLogin('');
    }

    /* ---------- UI wiring ---------- */

    el.loginForm.addEventListener('submit', (e) => {
        e.preventDefault();
        const name = el.name.value.trim();
        if (!validName(name)) {
            showLogin('Pick a name of 1 to 64 bytes, without control characters.');
            return;
        }
        login(name);
    });

    el.joinForm.addEventListener('submit', (e) => {
        e.preventDefault();
        const room = el.joinRoom.value.trim().replace(/^#/, '');
        if (!validName(room)) { toast('A room name is 1 to 64 bytes, without control characters.', 'error'); return; }
        el.joinRoom.value = '';
        const conv = ensureConv('room:' + room);
        openConv(conv.key);
        if (isOnline()) sendFrame({ type: 'join', room: room });
        else { conv.joined = true; saveRooms(); }
    });

    el.dmForm.addEventListener('submit', (e) => {
        e.preventDefault();
        const user = el.dmUser.value.trim().replace(/^@/, '');
        if (!validName(user)) { toast('A user name is 1 to 64 bytes, without control characters.', 'error'); return; }
        el.dmUser.value = '';
        openConv(ensureConv('dm:' + user).key);
    });

    el.leave.addEventListener('click', () => {
        const c = S.convs.get(S.active);
        if (!c || c.kind !== 'room') return;
        if (isOnline()) sendFrame({ type: 'leave', room: c.name });
        else { c.joined = false; saveRooms(); removeConv(c); }
    });

    el.composeForm.addEventListener('submit', (e) => {
        e.preventDefault();
        const text = el.compose.value;
        if (!text.trim()) return;
        el.compose.value = '';
        autosize();
        sendMessage(text);
        el.compose.focus();
    });

    el.compose.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            el.composeForm.requestSubmit();
        }
    });

    function autosize() {
        el.compose.style.height = 'auto';
        el.compose.style.height = Math.min(el.compose.scrollHeight, 160) + 'px';
    }
    el.compose.addEventListener('input', autosize);

    el.retry.addEventListener('click', () => { S.attempt = Math.max(0, S.attempt - 1); reconnectNow(); });
    el.logout.addEventListener('click', logout);
    window.addEventListener('online', () => { if (S.retryTimer) reconnectNow(); });
    document.addEventListener('visibilitychange', () => {
        const c = S.convs.get(S.active);
        if (!document.hidden && c && c.unread) {
            c.unread = 0;
            renderConvItem(c);
            renderTitle();
        }
    });
    /* refresh "last seen 5 min ago" texts */
    setInterval(() => { if (!S.stopped) renderPeople(); }, 60000);

    setState('offline', 'Offline');
    let remembered = '';
    try {
        remembered = sessionStorage.getItem('wsp.name') || '';
        el.name.value = remembered || localStorage.getItem('wsp.lastName') || '';
    } catch (e) { /* storage disabled */ }
    if (validName(remembered)) login(remembered);
    else showLogin('');
}());
