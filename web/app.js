/* wsproxy demo chat page: the UI only. Every protocol matter (connecting and reconnecting, resending
 * with the same cid, acks, de-duplication, token refresh on the open connection, history and
 * conversation-list paging, pacing, typed room access errors) is done by WsproxyClient from ./wsproxy.js, the reference client (clients/js/README.md).
 * No framework, no build step; user data only reaches the DOM through textContent and dataset. */
import { WsproxyClient, HandshakeError, ServerError, ForbiddenError } from './wsproxy.js';

const HISTORY_PAGE = 50;
const CONV_PAGE = 30;               /* conversations per page of the sidebar's list */
const DEFAULT_ROOM = 'lobby';
const NAME_MAX_BYTES = 64;          /* the server's rule for user and room names (UTF-8 bytes) */
const MAX_BODY_BYTES = 64 * 1024;   /* the server's default [limits] max_body, as compact JSON */
const REFUSED_AFTER = 3;            /* failed handshakes in a row before the page says "refused" */
const SERVICE_SENDER = 'system';    /* the API's default sender of pushes and broadcasts */
const ANNOUNCEMENTS_MAX = 3;

const $ = (id) => document.getElementById(id);
const el = {};
[
    'me', 'state', 'state-text', 'retry', 'logout', 'menu', 'menu-unread', 'login-view', 'login-form',
    'name', 'login', 'login-error', 'chat-view', 'sidebar', 'scrim', 'rooms', 'join-form', 'join-room',
    'dms', 'dm-form', 'dm-user', 'people', 'online-count', 'services-section', 'services', 'notice',
    'notice-title', 'notice-text', 'notice-retry', 'announcements', 'conv-title', 'conv-sub', 'leave',
    'messages', 'compose-form', 'compose', 'send', 'compose-limit', 'toast', 'conv-more',
].forEach((id) => { el[id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = $(id); });

const encoder = new TextEncoder();

/* One object holds the session so logout can drop it whole; callbacks of an old one check S. */
function freshSession() {
    return {
        me: null,
        chat: null,
        online: false,
        refused: false,         /* the server refused REFUSED_AFTER handshakes in a row */
        tickTimer: null,
        replayCount: 0,
        tokenFetches: 0,
        refreshes: 0,
        convs: new Map(),       /* "room:NAME" | "dm:NAME" -> conversation */
        active: null,
        users: new Map(),       /* name -> {state, lastSeen, service} */
        members: new Map(),     /* room -> Set of names */
        seen: new Map(),        /* message id -> element: history and live traffic overlap */
        deleted: new Set(),     /* message ids the backend deleted */
        list: 'none',           /* the conversation list: none | loading | loaded */
        listMore: false,
        listNext: null,
        pending: new Map(),     /* cid -> {conv, node, body, target} */
        seq: 0,
        /* cids must not repeat across page loads: the server dedupes sends by (user, cid) */
        tab: Date.now().toString(36) + Math.random().toString(36).slice(2, 8),
    };
}
let S = freshSession();

/* ---------- small helpers ---------- */

function byteLength(s) {
    return encoder.encode(s).length;
}

/* The server counts UTF-8 bytes; people count characters, so the page says it in characters. */
function nameProblem(s, what) {
    if (!s) return `Enter a ${what}.`;
    if (/[\u0000-\u001f\u007f]/.test(s)) return `A ${what} cannot contain control characters.`;
    if (byteLength(s) > NAME_MAX_BYTES) {
        return `A ${what} is at most 64 characters, where accented letters and other non-Latin ` +
            `characters count as 2 to 4 (emoji as 4): this one counts as ${byteLength(s)}.`;
    }
    return null;
}

function node(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = text;
    return n;
}

/* A body is any JSON value. {"text": "..."} (the docs' own push) shows its text; other values show
 * as compact JSON, marked as data. */
function bodyView(body) {
    if (typeof body === 'string') return { text: body, json: false };
    if (body && typeof body === 'object' && !Array.isArray(body) && typeof body.text === 'string') {
        return { text: body.text, json: false };
    }
    let text;
    try { text = JSON.stringify(body); } catch (e) { text = String(body); }
    return { text: text === undefined ? String(body) : text, json: true };
}

function bodyNode(body) {
    const v = bodyView(body);
    const n = node('div', v.json ? 'body json' : 'body', v.text);
    return n;
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

function narrow() {
    return window.matchMedia('(max-width: 700px)').matches;
}

/* ---------- connection state ---------- */

function setState(state, text) {
    el.state.dataset.state = state;
    el.stateText.textContent = text;
    el.retry.hidden = state !== 'reconnecting';     /* a refusal has its own notice and button */
    el.compose.placeholder = state === 'online' ? 'Write a message…'
        : 'Write a message… (sent when back online)';
    if (state !== 'online') delete el.state.dataset.replayed;
}

function showNotice(title, text) {
    el.noticeTitle.textContent = title;
    el.noticeText.textContent = text;
    el.notice.hidden = false;
}

function hideNotice() {
    el.notice.hidden = true;
}

function onClientState(s) {
    clearInterval(S.tickTimer);
    S.tickTimer = null;
    const wasOnline = S.online;
    S.online = s.state === 'open';
    if (wasOnline !== S.online) renderPeople();
    if (s.state === 'open') {
        el.state.dataset.session = s.session;
        setState('online', 'Online');
        hideNotice();
    } else if (s.state === 'connecting') {
        if (S.refused) setState('refused', 'Refused by server');
        else setState('connecting', s.attempt ? 'Reconnecting…' : 'Connecting…');
    } else if (s.state === 'reconnecting') {
        el.state.dataset.drops = String(Number(el.state.dataset.drops || 0) + 1);
        if (s.code === 1008 && s.reason && s.reason !== 'token expired') {
            toast('Disconnected by the server: ' + s.reason, 'error');
        }
        if (S.refused) {
            setState('refused', 'Refused by server');
        } else {
            const at = Date.now() + s.delayMs;
            const tick = () => {
                const left = Math.max(1, Math.ceil((at - Date.now()) / 1000));
                setState('reconnecting', 'Reconnecting in ' + left + 's');
            };
            tick();
            S.tickTimer = setInterval(tick, 1000);
        }
    } else if (s.state === 'closed') {
        setState('offline', 'Offline');
        if (s.reason === 'kicked') {
            showNotice('Signed out by an operator.', 'This session was ended on the server. Log out and in again to continue.');
        }
    }
    S.pending.forEach((p) => {
        if (!p.failed) p.node.querySelector('.label').textContent = S.online ? 'sending…' : 'waiting for connection…';
    });
}

function onClientError(e) {
    if (e instanceof HandshakeError) {
        /* A browser is never shown the HTTP answer to a refused upgrade (403 for an Origin outside
         * [server] origins, 401, 503): it only sees the socket fail. The token fetch before each
         * attempt worked, so the server is up and refusing. The client keeps retrying with backoff. */
        S.refused = true;
        setState('refused', 'Refused by server');
        showNotice('The server refused the connection.',
            `${e.attempts} attempts in a row were turned away, and a browser is not told why: this ` +
            'page\'s address may not be among the server\'s allowed origins, or the server is full. ' +
            'Still trying, less and less often.');
        return;
    }
    if (e.code === 'token_provider') {
        const status = e.cause && e.cause.status;
        if (status === 400 || status === 404) {
            const msg = e.cause.message;
            logout();
            showLogin(msg);
        }
        return;     /* the server is unreachable: the state already says "Reconnecting" */
    }
    if (e instanceof ServerError) {
        toast('Server: ' + (e.message || e.code), 'error');
        return;
    }
    toast(e.message || String(e), 'error');
}

async function fetchToken(name) {
    S.tokenFetches += 1;
    el.state.dataset.tokenFetches = String(S.tokenFetches);
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
    return { token: j.token, exp: typeof j.exp === 'number' ? j.exp : undefined };
}

function startClient(name, firstToken) {
    const sess = S;
    let prefetched = firstToken;     /* the login's token serves the first connect: one fetch, not two */
    const chat = new WsproxyClient({
        url: (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws',
        token: () => {
            if (prefetched) {
                const t = prefetched;
                prefetched = null;
                return Promise.resolve(t);
            }
            return fetchToken(name);
        },
        handshakeFailureLimit: REFUSED_AFTER,
    });
    S.chat = chat;
    const on = (type, fn) => chat.on(type, (v) => { if (S === sess) fn(v); });
    on('state', onClientState);
    on('error', onClientError);
    on('open', onOpen);
    on('message', onMsg);
    on('replayed', onReplayed);
    on('joined', (f) => onJoined(f.room, f.reason));
    on('left', (f) => onLeft(f.room, f.reason));
    on('deleted', onDeleted);
    on('presence', onPresence);
    on('member', onMember);
    on('truncated', onTruncated);
    on('broadcast', onBroadcast);
    on('refreshed', () => {
        S.refreshes += 1;
        el.state.dataset.refreshes = String(S.refreshes);
    });
    chat.connect().catch(() => {});
}

/* ---------- events from the client ---------- */

function onOpen(f) {
    S.refused = false;
    S.replayCount = 0;
    if (typeof f.user === 'string') S.me = f.user;
    /* A new device builds its sidebar from the server's list. Asked first thing: the call goes out
     * before the replay is acked, so its unread counts are what waited for this user. */
    if (S.list === 'none') loadConversations();
    el.me.textContent = S.me;
    el.me.hidden = false;
    /* The server remembers memberships (welcome.rooms); a first visit lands in the lobby. */
    const rooms = Array.isArray(f.rooms) ? f.rooms : [];
    rooms.forEach((r) => { if (typeof r === 'string') markJoined(r); });
    if (!rooms.length) joinRoom(DEFAULT_ROOM);
    /* a room left on another device while this one was away */
    Array.from(S.convs.values()).forEach((c) => {
        if (c.kind === 'room' && c.joined && !rooms.includes(c.name) && c.name !== DEFAULT_ROOM) removeConv(c);
    });
    const peers = [];
    S.users.forEach((u, n) => { if (n !== S.me) peers.push(n); });
    if (peers.length) askPresence(peers);
    S.convs.forEach((c) => { if (c.kind === 'room' && c.joined) loadMembers(c.name); });
    if (!S.active) {
        const first = S.convs.get('room:' + DEFAULT_ROOM) || S.convs.values().next().value;
        if (first) openConv(first.key);
    }
    const active = S.convs.get(S.active);
    if (active && active.history === 'none' && (active.kind === 'dm' || active.joined)) loadHistory(active);
    renderPeople();
}

function convKeyOf(m) {
    if (typeof m.room === 'string') return 'room:' + m.room;
    return 'dm:' + (m.from === S.me ? m.to : m.from);
}

function onMsg(f) {
    if (typeof f.room !== 'string' && (typeof f.from !== 'string' || typeof f.to !== 'string')) return;
    const conv = ensureConv(convKeyOf(f));
    if (conv.kind === 'room' && !conv.joined) markJoined(conv.name);   /* only members get room traffic */
    if (f.from !== S.me) noteSender(f.from, f.via === 'api');
    if (S.seen.has(f.id)) return;   /* already shown through history */
    if (f.replay) S.replayCount += 1;
    placeMsg(conv, renderMsg(f, !!f.replay), f.id);
    conv.lastActivity = f.ts || Date.now();
    if (f.from !== S.me && (S.active !== conv.key || document.hidden)) {
        conv.liveUnread.add(f.id);
        recount(conv);
        renderTitle();
    }
    noteLast(conv, f);
}

function onReplayed() {
    el.state.dataset.replayed = 'yes';
    if (S.replayCount > 0) {
        toast(S.replayCount === 1 ? '1 message arrived while you were offline.'
            : S.replayCount + ' messages arrived while you were offline.');
    }
    S.replayCount = 0;
}

/* A broadcast is the backend speaking to everyone: an announcement above the conversation, kept
 * until dismissed (not stored by the server, so it is gone after a reload). */
function onBroadcast(f) {
    const box = node('div', 'announce');
    box.dataset.from = typeof f.from === 'string' ? f.from : SERVICE_SENDER;
    const icon = node('span', 'announce-icon', '!');
    icon.setAttribute('aria-hidden', 'true');
    const main = node('div', 'announce-main');
    const meta = node('div', 'meta');
    meta.append(node('span', 'announce-title', 'Announcement'), node('time', 'time', fmtTime(f.ts)));
    main.append(meta, bodyNode(f.body));
    const close = node('button', 'link-btn announce-close', '×');
    close.type = 'button';
    close.setAttribute('aria-label', 'Dismiss announcement');
    close.addEventListener('click', () => box.remove());
    box.append(icon, main, close);
    el.announcements.prepend(box);
    while (el.announcements.children.length > ANNOUNCEMENTS_MAX) el.announcements.lastElementChild.remove();
}

function markJoined(room) {
    const conv = ensureConv('room:' + room);
    conv.joined = true;
    return conv;
}

function onJoined(room, reason) {
    if (typeof room !== 'string') return;
    const conv = markJoined(room);
    setAccess(conv, null);
    if (reason === 'added') accessNote('You were added to #' + room + '.', 'added');
    loadMembers(room);
    if (!S.active) openConv(conv.key);
    else if (S.active === conv.key && conv.history === 'none') loadHistory(conv);
    if (S.active === conv.key) renderHeader();
}

const LEFT_REASONS = {
    removed: (r) => 'You were removed from #' + r + '.',
    deleted: (r) => '#' + r + ' was deleted.',
    revoked: (r) => 'Your access to #' + r + ' has ended.',
};

function onLeft(room, reason) {
    if (typeof room !== 'string') return;
    if (LEFT_REASONS[reason]) accessNote(LEFT_REASONS[reason](room), reason);
    const conv = S.convs.get('room:' + room);
    S.members.delete(room);
    if (conv) removeConv(conv);
    renderPeople();
}

function onPresence(f) {
    if (typeof f.user !== 'string') return;
    const u = noteUser(f.user);
    const was = u.state + u.service;
    u.state = f.state === 'online' ? 'online' : 'offline';
    if (typeof f.last_seen === 'number') u.lastSeen = f.last_seen;
    /* A sender the chat has never seen connected is not a chat user: a backend pushing through
     * the API with its own "from". (The msg frame itself is the same for both.) */
    if (u.sender) u.service = u.viaApi || f.user === SERVICE_SENDER || f.last_seen === null;
    if (was !== u.state + u.service) {
        markServiceMessages(f.user);
        renderPeople();
    }
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

function onTruncated(f) {
    if (typeof f.room !== 'string') return;
    const conv = ensureConv('room:' + f.room);
    conv.more = true;
    renderLoadOlder(conv);
    toast('Some older messages in #' + f.room + ' were skipped; use "Load older" to see them.');
}

/* ---------- calls through the client ---------- */

function joinRoom(room) {
    const sess = S;
    S.chat.join(room).catch((e) => {
        if (S !== sess || e.code === 'closed') return;
        if (e instanceof ForbiddenError) {
            setAccess(ensureConv('room:' + room), 'forbidden');
            toast(FORBIDDEN_TEXT, 'error');
            return;
        }
        toast('Cannot join #' + room + ': ' + e.message, 'error');
    });
}

function loadMembers(room) {
    const sess = S;
    S.chat.members(room).then((users) => {
        if (S !== sess) return;
        const set = new Set();
        users.forEach((m) => {
            if (!m || typeof m.user !== 'string') return;
            set.add(m.user);
            const u = noteUser(m.user, true);
            u.state = m.state === 'online' ? 'online' : 'offline';
            if (typeof m.last_seen === 'number') u.lastSeen = m.last_seen;
        });
        S.members.set(room, set);
        renderPeople();
    }).catch(() => {});
}

function askPresence(names) {
    const sess = S;
    for (let i = 0; i < names.length; i += 100) {
        S.chat.presence(names.slice(i, i + 100)).then((list) => {
            if (S === sess) list.forEach(onPresence);
        }).catch(() => {});
    }
}

/* ---------- users: chat users and push senders ---------- */

function noteUser(name, quiet) {
    let u = S.users.get(name);
    if (!u) {
        u = { state: 'unknown', lastSeen: 0, service: name === SERVICE_SENDER, sender: false, viaApi: false };
        S.users.set(name, u);
        if (name !== S.me && !quiet) {
            renderPeople();
            if (S.online) askPresence([name]);
        }
    }
    return u;
}

/* A user who sent us a message: a chat user, or a backend pushing through the API. */
function noteSender(name, viaApi) {
    const u = noteUser(name);
    if (viaApi && !u.viaApi) {   /* the server says the backend sent it: no guessing needed */
        u.viaApi = true;
        u.service = true;
        markServiceMessages(name);
        renderPeople();
    }
    if (!u.sender) {
        u.sender = true;
        if (u.viaApi) u.service = true;
        else if (u.lastSeen || u.state === 'online') u.service = false;
        else if (S.online && u.state !== 'unknown') askPresence([name]);
    }
    return u;
}

/* Messages carry their own mark (via); this is about the sender's place in the sidebar. */
function markServiceMessages(name) {
    const c = S.convs.get('dm:' + name);
    if (c) renderConvItem(c);
    if (S.active === 'dm:' + name) renderHeader();
}

function isService(name) {
    const u = S.users.get(name);
    return name === SERVICE_SENDER || !!(u && u.service);
}

function isOnline(name) {
    if (name === S.me) return S.online;
    const u = S.users.get(name);
    return !!u && u.state === 'online';
}

/* ---------- conversations ---------- */

function ensureConv(key) {
    let c = S.convs.get(key);
    if (c) return c;
    const sep = key.indexOf(':');
    c = {
        key,
        kind: key.slice(0, sep),
        name: key.slice(sep + 1),
        unread: 0,
        liveUnread: new Set(),  /* ids of unread messages seen on this page */
        listUnread: null,       /* {n, upTo}: the server's count, for messages up to id upTo */
        last: null,             /* {id, from, ts, text, deleted, via}: the newest message */
        access: null,           /* null | 'forbidden': a closed room this user is not in */
        opened: false,          /* the user opened it on this page */
        joined: false,
        history: 'none',    /* none | loading | loaded */
        more: true,
        nextBefore: null,
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
    const main = node('span', 'conv-main');
    c.preview = node('span', 'conv-preview');
    c.preview.hidden = true;
    main.append(node('span', 'conv-name', c.name), c.preview);
    c.item.append(main, node('span', 'unread'));
    c.item.addEventListener('click', () => openConv(key));
    c.item.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); openConv(key); }
    });
    S.convs.set(key, c);
    placeItem(c);
    if (c.kind === 'dm') noteUser(c.name);
    renderConvItem(c);
    return c;
}

/* Each list is ordered by its newest message, newest first; conversations without one come last,
 * by name. */
function placeItem(c) {
    const list = c.kind === 'room' ? el.rooms : el.dms;
    const lastId = c.last ? c.last.id : 0;
    const after = Array.from(list.children).find((li) => {
        const other = S.convs.get(li.dataset.conv);
        if (!other || other === c) return false;
        const otherId = other.last ? other.last.id : 0;
        return otherId < lastId || (otherId === lastId && other.name.localeCompare(c.name) > 0);
    });
    if (after) {
        if (c.item.nextElementSibling !== after) list.insertBefore(c.item, after);
    } else if (list.lastElementChild !== c.item) {
        list.append(c.item);
    }
}

/* Unread = the server's count from the conversation list (messages up to its last id) plus what
 * this page saw arrive after that: a replayed message the list already counted is not counted twice. */
function recount(c) {
    const upTo = c.listUnread ? c.listUnread.upTo : 0;
    let n = c.listUnread ? c.listUnread.n : 0;
    c.liveUnread.forEach((id) => { if (id > upTo) n += 1; });
    c.unread = n;
    renderConvItem(c);
}

function clearUnread(c) {
    c.liveUnread.clear();
    c.listUnread = null;
    recount(c);
}

/* The newest message of a conversation, shown under its name. m: a msg, a history item or a list
 * item's "last" ({preview | deleted} instead of a body). */
function noteLast(c, m) {
    if (!m || typeof m.id !== 'number' || (c.last && c.last.id >= m.id)) return;
    const text = typeof m.preview === 'string' ? m.preview : m.body !== undefined ? bodyView(m.body).text : '';
    c.last = { id: m.id, from: m.from, ts: m.ts, text, deleted: m.deleted === true || S.deleted.has(m.id),
        via: m.via === 'api' };
    if (typeof m.ts === 'number') c.lastActivity = Math.max(c.lastActivity, m.ts);
    renderConvItem(c);
    placeItem(c);
}

/* ---------- the conversation list: the server's, paged ---------- */

function loadConversations() {
    if (S.list === 'loading') return;
    const sess = S;
    const first = S.list === 'none';
    S.list = 'loading';
    renderConvMore();
    S.chat.conversations({ limit: CONV_PAGE, before: first ? undefined : S.listNext }).then((page) => {
        if (S !== sess) return;
        page.items.forEach(applyListItem);
        S.list = 'loaded';
        S.listMore = page.more;
        S.listNext = page.nextBefore;
        el.sidebar.dataset.list = 'loaded';
        renderConvMore();
        renderTitle();
        renderPeople();
    }, (e) => {
        if (S !== sess) return;
        S.list = first ? 'none' : 'loaded';
        renderConvMore();
        if (e.code !== 'closed') toast('Cannot load your conversations: ' + e.message, 'error');
    });
}

function applyListItem(item) {
    if (!item || !item.last) return;
    const name = typeof item.room === 'string' ? item.room : item.with;
    if (typeof name !== 'string') return;
    const c = ensureConv((typeof item.room === 'string' ? 'room:' : 'dm:') + name);
    if (c.kind === 'room') c.joined = true;      /* the list holds only this user's rooms */
    else if (item.last.via === 'api' && item.last.from === name) noteSender(name, true);
    noteLast(c, item.last);
    /* opened on this page since the list was asked for: read, whatever the list says */
    if (c.opened || (S.active === c.key && !document.hidden)) return;
    if (!c.listUnread || c.listUnread.upTo <= item.last.id) {
        c.listUnread = { n: Number(item.unread) || 0, upTo: item.last.id };
        recount(c);
    }
}

function renderConvMore() {
    el.convMore.hidden = !(S.list === 'loading' && S.listNext) && !(S.list === 'loaded' && S.listMore);
    el.convMore.disabled = S.list === 'loading';
    el.convMore.textContent = S.list === 'loading' ? 'Loading…' : 'More conversations';
}

/* ---------- access to rooms ---------- */

const FORBIDDEN_TEXT = 'This room is closed: ask to be added.';

/* A room the server refused (a closed room this user is not in) says so in its own thread. */
function setAccess(c, access) {
    if (c.access === access) return;
    c.access = access;
    if (access) {
        c.thread.dataset.access = access;
        c.empty.textContent = FORBIDDEN_TEXT;
        c.empty.classList.add('denied');
        c.empty.hidden = false;
        c.item.dataset.access = access;
    } else {
        delete c.thread.dataset.access;
        delete c.item.dataset.access;
        c.empty.textContent = 'No messages yet. Say hello!';
        c.empty.classList.remove('denied');
        c.empty.hidden = c.list.children.length > 0;
    }
    if (S.active === c.key) renderHeader();
}

/* Changes to this user's rooms that came from elsewhere (the backend, a token): kept on screen
 * until dismissed, above the conversation. */
function accessNote(text, reason) {
    const box = node('div', 'announce access-note');
    box.dataset.reason = reason;
    const icon = node('span', 'announce-icon', '#');
    icon.setAttribute('aria-hidden', 'true');
    const main = node('div', 'announce-main');
    const meta = node('div', 'meta');
    meta.append(node('span', 'announce-title', 'Rooms'), node('time', 'time', fmtTime(Date.now())));
    main.append(meta, node('div', 'body', text));
    const close = node('button', 'link-btn announce-close', '×');
    close.type = 'button';
    close.setAttribute('aria-label', 'Dismiss');
    close.addEventListener('click', () => box.remove());
    box.append(icon, main, close);
    el.announcements.prepend(box);
    while (el.announcements.children.length > ANNOUNCEMENTS_MAX) el.announcements.lastElementChild.remove();
}

/* The backend deleted a message: it stays in place, marked, without its text. */
function onDeleted(f) {
    S.deleted.add(f.id);
    const n = S.seen.get(f.id);
    if (n) markDeleted(n);
    S.convs.forEach((c) => {
        if (c.liveUnread.delete(f.id)) recount(c);
        if (c.last && c.last.id === f.id) {
            c.last.deleted = true;
            renderConvItem(c);
        }
    });
    renderTitle();
}

function markDeleted(n) {
    n.classList.add('deleted');
    n.dataset.deleted = 'yes';
    const body = n.querySelector('.body');
    if (body) {
        body.className = 'body deleted-body';
        body.textContent = 'This message was deleted.';
    }
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
    conv.opened = true;
    clearUnread(conv);
    renderTitle();
    renderHeader();
    scrollToBottom();
    setDrawer(false);
    if (conv.history === 'none' && (conv.kind === 'dm' || conv.joined)) loadHistory(conv);
    if (conv.kind === 'room' && conv.joined && S.online) loadMembers(conv.name);
    if (window.matchMedia('(pointer: fine)').matches) el.compose.focus();
}

function historyQuery(conv, before) {
    const q = conv.kind === 'room' ? { room: conv.name } : { with: conv.name };
    q.limit = HISTORY_PAGE;
    if (before) q.before = before;
    return q;
}

function loadHistory(conv) {
    if (!S.online || conv.history === 'loading') return;
    const sess = S;
    conv.history = 'loading';
    conv.thread.dataset.history = 'loading';
    S.chat.history(historyQuery(conv)).then((page) => {
        if (S !== sess) return;
        conv.history = 'loaded';
        addHistory(conv, page);
        conv.thread.dataset.history = 'loaded';
        if (S.active === conv.key) scrollToBottom();
    }, (e) => {
        if (S !== sess) return;
        conv.history = 'none';
        delete conv.thread.dataset.history;
        if (e instanceof ForbiddenError) setAccess(conv, 'forbidden');
    });
}

function loadOlder(conv) {
    if (!S.online || conv.loadingOlder) return;
    const sess = S;
    const first = conv.list.querySelector('.msg[data-id]');
    const before = first ? Number(first.dataset.id) : conv.nextBefore;
    conv.loadingOlder = true;
    renderLoadOlder(conv);
    const box = el.messages;
    const fromBottom = box.scrollHeight - box.scrollTop;
    S.chat.history(historyQuery(conv, before)).then((page) => {
        if (S !== sess) return;
        addHistory(conv, page);
    }, () => {}).finally(() => {
        if (S !== sess) return;
        conv.loadingOlder = false;
        renderLoadOlder(conv);
        /* keep the message the user was looking at in place */
        if (S.active === conv.key) box.scrollTop = box.scrollHeight - fromBottom;
    });
}

function addHistory(conv, page) {
    page.items.forEach((m) => {
        if (!m || typeof m.id !== 'number') return;
        if (m.from !== S.me) noteSender(m.from, m.via === 'api');
        if (S.seen.has(m.id)) return;
        placeMsg(conv, renderMsg(m, false), m.id);
    });
    if (page.items.length) noteLast(conv, page.items[0]);
    conv.more = page.more;
    conv.nextBefore = page.nextBefore;
    renderLoadOlder(conv);
}

/* ---------- messages ---------- */

function renderMsg(m, offline) {
    const n = node('div', 'msg');
    const mine = m.from === S.me;
    if (mine) n.classList.add('mine');
    if (offline) n.classList.add('offline');
    /* The server marks what the backend pushed ("via": "api"); a chat user cannot forge it. */
    const service = m.via === 'api';
    if (service) n.classList.add('service');
    if (service) n.dataset.via = 'api';
    n.dataset.id = String(m.id);
    n.dataset.from = m.from;
    if (typeof m.ts === 'number') n.dataset.ts = String(m.ts);
    if (typeof m.cid === 'string' && mine) n.dataset.cid = m.cid;
    const meta = node('div', 'meta');
    meta.append(node('span', 'from', mine ? 'You' : m.from));
    if (service) {
        const lbl = node('span', 'label service-label', 'via API');
        lbl.title = 'Sent by a backend through the push API, not by a chat user';
        meta.append(lbl);
    }
    const t = node('time', 'time', fmtTime(m.ts));
    if (m.ts) {
        t.dateTime = new Date(m.ts).toISOString();
        t.title = new Date(m.ts).toLocaleString();
    }
    meta.append(t);
    if (offline) meta.append(node('span', 'label offline-label', 'received while you were offline'));
    n.append(meta, bodyNode(m.body));
    if (S.deleted.has(m.id)) markDeleted(n);
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

/* The server refuses a body over [limits] max_body (compact JSON); say so here, keep the text. */
function bodyTooLarge(text) {
    const bytes = byteLength(JSON.stringify(text));
    return bytes > MAX_BODY_BYTES ? bytes : 0;
}

function showComposeLimit(bytes) {
    if (!bytes) {
        el.composeLimit.hidden = true;
        el.compose.removeAttribute('aria-invalid');
        return;
    }
    el.composeLimit.textContent = `This message is too long to send: ${Math.ceil(bytes / 1024)} KiB, and the ` +
        'server takes at most 64 KiB. Shorten it or split it in parts; nothing was sent or cut.';
    el.composeLimit.hidden = false;
    el.compose.setAttribute('aria-invalid', 'true');
}

function sendMessage(text) {
    const conv = S.convs.get(S.active);
    if (!conv) return;
    S.seq += 1;
    const cid = 'p' + S.tab + '-' + S.seq;
    const target = conv.kind === 'room' ? { room: conv.name } : { to: conv.name };
    const n = node('div', 'msg mine pending');
    n.dataset.cid = cid;
    n.dataset.from = S.me;
    const meta = node('div', 'meta');
    meta.append(node('span', 'from', 'You'), node('time', 'time', ''),
        node('span', 'label pending-label', S.online ? 'sending…' : 'waiting for connection…'));
    n.append(meta, bodyNode(text));
    const p = { conv, node: n, body: text, target, cid, failed: false };
    S.pending.set(cid, p);
    conv.list.append(n);
    regroup(n);
    conv.empty.hidden = true;
    conv.lastActivity = Date.now();
    scrollToBottom();
    transmit(p);
}

/* The client keeps a send until the server stored it, across reconnects, with the same cid. */
function transmit(p) {
    const sess = S;
    p.failed = false;
    p.node.classList.remove('failed');
    p.node.classList.add('pending');
    const lbl = p.node.querySelector('.label');
    lbl.className = 'label pending-label';
    lbl.textContent = S.online ? 'sending…' : 'waiting for connection…';
    const retry = p.node.querySelector('.retry');
    if (retry) retry.remove();
    S.chat.send({ ...p.target, body: p.body, cid: p.cid }).then((r) => {
        if (S === sess) confirmPending(p.cid, r.id, r.ts);
    }, (e) => {
        if (S !== sess) return;
        if (e instanceof ForbiddenError) setAccess(p.conv, 'forbidden');
        markFailed(p, e instanceof ForbiddenError ? 'room is closed'
            : e.code === 'not_member' ? 'not a member'
                : e.code === 'too_large' ? 'too large for this server' : 'not sent');
        if (e.code !== 'closed') toast('Not sent: ' + e.message, 'error');
    });
}

function markFailed(p, why) {
    p.failed = true;
    p.node.classList.remove('pending');
    p.node.classList.add('failed');
    const lbl = p.node.querySelector('.label');
    lbl.className = 'label failed-label';
    lbl.textContent = why;
    if (!p.node.querySelector('.retry')) {
        const b = node('button', 'retry link-btn', 'Retry');
        b.type = 'button';
        b.addEventListener('click', () => transmit(p));
        p.node.querySelector('.meta').append(b);
    }
}

function confirmPending(cid, id, ts) {
    const p = S.pending.get(cid);
    if (!p) return;
    S.pending.delete(cid);
    const n = p.node;
    if (S.seen.has(id)) {           /* history got here first and shows it already */
        n.remove();
        return;
    }
    n.classList.remove('pending', 'failed');
    const lbl = n.querySelector('.label');
    if (lbl) lbl.remove();
    const retry = n.querySelector('.retry');
    if (retry) retry.remove();
    n.dataset.id = String(id);
    /* Stored by the server. Whether a direct message reached the recipient is not told to the
     * sender by the protocol, so the page does not claim it. */
    n.title = 'Stored by the server';
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
    noteLast(p.conv, { id, from: S.me, ts: when, body: p.body });
}

/* ---------- rendering ---------- */

function renderConvItem(c) {
    const badge = c.item.querySelector('.unread');
    badge.textContent = c.unread > 99 ? '99+' : String(c.unread);
    badge.hidden = c.unread === 0;
    c.item.dataset.unread = String(c.unread);
    c.item.classList.toggle('has-unread', c.unread > 0);
    const last = c.last;
    c.preview.hidden = !last;
    if (last) {
        const who = last.from === S.me ? 'You' : c.kind === 'room' || last.from !== c.name ? last.from : '';
        const text = last.deleted ? 'message deleted' : last.text;
        c.preview.textContent = (who ? who + ': ' : '') + text;
        c.preview.classList.toggle('deleted', last.deleted);
        c.item.dataset.lastId = String(last.id);
        c.item.title = (last.via ? 'via API · ' : '') + fmtTime(last.ts);
    }
    if (c.kind === 'dm') {
        const u = S.users.get(c.name);
        c.item.dataset.presence = u ? u.state : 'unknown';
        c.item.classList.toggle('service', isService(c.name));
    }
}

function renderTitle() {
    let total = 0;
    S.convs.forEach((c) => { total += c.unread; });
    document.title = (total ? '(' + total + ') ' : '') + 'wsproxy chat';
    el.menuUnread.textContent = total > 99 ? '99+' : String(total);
    el.menuUnread.hidden = total === 0;
}

function renderLoadOlder(c) {
    const show = c.history === 'loaded' && c.more;
    c.older.hidden = !show && !c.loadingOlder;
    c.older.disabled = c.loadingOlder;
    c.older.textContent = c.loadingOlder ? 'Loading…' : 'Load older messages';
    if (c.history === 'loaded' && !c.more && c.list.children.length) c.thread.dataset.start = 'yes';
    else delete c.thread.dataset.start;
}

/* Members of one room, you included, and how many of them are online: the header and the sidebar
 * count the same way. */
function roomCounts(room) {
    const set = S.members.get(room);
    if (!set) return null;
    const all = new Set(set);
    if (S.me) all.add(S.me);
    let on = 0;
    all.forEach((n) => { if (isOnline(n)) on += 1; });
    return { members: all.size, online: on };
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
    /* a closed room this user is not in: nothing to write or leave, only to close */
    el.composeForm.hidden = c.access === 'forbidden';
    el.leave.textContent = c.access === 'forbidden' ? 'Close' : 'Leave room';
    if (c.kind === 'room' && c.access === 'forbidden') {
        el.convSub.textContent = FORBIDDEN_TEXT;
    } else if (c.kind === 'room') {
        const n = roomCounts(c.name);
        el.convSub.textContent = !n ? (c.joined ? 'Room' : 'Joining…')
            : n.members + (n.members === 1 ? ' member' : ' members') + ' · ' + n.online + ' online';
    } else if (isService(c.name)) {
        el.convSub.textContent = 'Notifications (not a chat user: replies are stored but nobody reads them)';
    } else {
        const u = S.users.get(c.name);
        el.convSub.textContent = !u || u.state === 'unknown' ? 'Direct message'
            : u.state === 'online' ? 'Online'
                : 'Offline' + (u.lastSeen ? ' · last seen ' + fmtAgo(u.lastSeen) : '');
    }
}

function personItem(n, u, you) {
    const li = node('li', 'person');
    li.dataset.user = n;
    li.dataset.presence = you ? (S.online ? 'online' : 'offline') : u.state;
    li.append(node('span', 'dot'), node('span', 'person-name', n));
    if (you) {
        li.classList.add('you');
        li.append(node('span', 'seen', 'you'));
        return li;
    }
    li.tabIndex = 0;
    li.setAttribute('role', 'button');
    li.title = u.state === 'online' ? 'Online — click to message'
        : u.lastSeen ? 'Last seen ' + fmtAgo(u.lastSeen) : 'Offline';
    if (u.state !== 'online' && u.lastSeen) li.append(node('span', 'seen', fmtAgo(u.lastSeen)));
    li.addEventListener('click', () => openConv(ensureConv('dm:' + n).key));
    li.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') openConv(ensureConv('dm:' + n).key);
    });
    return li;
}

/* PEOPLE: you and the members of your rooms, then other chat users you talk to. "Notifications
 * from": senders that are not chat users (the backend's pushes). */
function renderPeople() {
    const members = new Set();
    S.convs.forEach((c) => {
        if (c.kind === 'room' && c.joined) (S.members.get(c.name) || []).forEach((n) => members.add(n));
    });
    const people = [];
    const services = [];
    S.users.forEach((u, n) => {
        if (n === S.me) return;
        if (isService(n) && !members.has(n)) services.push(n);
        else if (members.has(n) || S.convs.has('dm:' + n)) people.push(n);
    });
    const online = (n) => (isOnline(n) ? 0 : 1);
    people.sort((a, b) => online(a) - online(b) || a.localeCompare(b));
    services.sort((a, b) => a.localeCompare(b));
    const frag = document.createDocumentFragment();
    let on = 0;
    if (S.me) {
        frag.append(personItem(S.me, null, true));
        if (S.online) on += 1;
    }
    people.forEach((n) => {
        if (isOnline(n)) on += 1;
        frag.append(personItem(n, S.users.get(n), false));
    });
    if (!people.length) frag.append(node('li', 'muted', 'Nobody else here yet.'));
    el.people.replaceChildren(frag);
    el.onlineCount.textContent = S.me ? on + ' of ' + (people.length + 1) + ' online' : '';
    const sfrag = document.createDocumentFragment();
    services.forEach((n) => {
        const li = node('li', 'person service');
        li.dataset.user = n;
        li.tabIndex = 0;
        li.setAttribute('role', 'button');
        li.title = 'Messages pushed by a backend, not a chat user';
        const icon = node('span', 'service-icon');
        icon.setAttribute('aria-hidden', 'true');
        li.append(icon, node('span', 'person-name', n));
        li.addEventListener('click', () => openConv(ensureConv('dm:' + n).key));
        sfrag.append(li);
    });
    el.services.replaceChildren(sfrag);
    el.servicesSection.hidden = services.length === 0;
    S.convs.forEach((c) => { if (c.kind === 'dm') renderConvItem(c); });
    renderHeader();
}

function scrollToBottom() {
    el.messages.scrollTop = el.messages.scrollHeight;
}

/* On a narrow screen the sidebar is a drawer behind the menu button. */
function setDrawer(open) {
    el.chatView.classList.toggle('side-open', open);
    el.menu.setAttribute('aria-expanded', String(open));
    el.scrim.hidden = !open;
}

/* ---------- login / logout ---------- */

function showChat() {
    el.loginView.hidden = true;
    el.chatView.hidden = false;
    el.logout.hidden = false;
    el.state.hidden = false;
    el.menu.hidden = false;
    renderPeople();
    renderHeader();
}

function showLogin(msg) {
    el.chatView.hidden = true;
    el.loginView.hidden = false;
    el.logout.hidden = true;
    el.me.hidden = true;
    el.state.hidden = true;     /* "Offline" means nothing before a login */
    el.menu.hidden = true;
    el.retry.hidden = true;
    el.login.disabled = false;
    el.loginError.hidden = !msg;
    el.loginError.textContent = msg || '';
    el.name.focus();
}

async function login(name) {
    el.login.disabled = true;
    el.loginError.hidden = true;
    S.me = name;
    let first;
    try {
        first = await fetchToken(name);
    } catch (e) {
        showLogin(e.status ? e.message : 'Cannot reach the server.');
        return;
    }
    try {
        localStorage.setItem('wsp.lastName', name);
        sessionStorage.setItem('wsp.name', name);
    } catch (e) { /* storage disabled */ }
    showChat();
    startClient(name, first);
}

function logout() {
    clearInterval(S.tickTimer);
    if (S.chat) S.chat.close();
    try { sessionStorage.removeItem('wsp.name'); } catch (e) { /* storage disabled */ }
    S = freshSession();
    el.rooms.replaceChildren();
    el.dms.replaceChildren();
    el.people.replaceChildren();
    el.services.replaceChildren();
    el.messages.replaceChildren();
    el.announcements.replaceChildren();
    el.convMore.hidden = true;
    delete el.sidebar.dataset.list;
    for (const k of ['session', 'drops', 'refreshes', 'tokenFetches', 'replayed']) delete el.state.dataset[k];
    hideNotice();
    renderTitle();
    setState('offline', 'Offline');
    setDrawer(false);
    showLogin('');
}

/* ---------- UI wiring ---------- */

el.loginForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = el.name.value.trim();
    const problem = nameProblem(name, 'name');
    if (problem) {
        showLogin(problem);
        return;
    }
    login(name);
});

el.joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const room = el.joinRoom.value.trim().replace(/^#/, '');
    const problem = nameProblem(room, 'room name');
    if (problem) { toast(problem, 'error'); return; }
    el.joinRoom.value = '';
    const conv = ensureConv('room:' + room);
    openConv(conv.key);
    joinRoom(room);
});

el.dmForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const user = el.dmUser.value.trim().replace(/^@/, '');
    const problem = nameProblem(user, 'user name');
    if (problem) { toast(problem, 'error'); return; }
    el.dmUser.value = '';
    openConv(ensureConv('dm:' + user).key);
});

el.leave.addEventListener('click', () => {
    const c = S.convs.get(S.active);
    if (!c || c.kind !== 'room') return;
    if (c.access === 'forbidden') {
        removeConv(c);
        return;
    }
    const sess = S;
    S.chat.leave(c.name).catch((e) => {
        if (S !== sess || e.code === 'closed') return;
        if (e.code === 'not_member') removeConv(c);
        else toast('Cannot leave #' + c.name + ': ' + e.message, 'error');
    });
});

el.composeForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = el.compose.value;
    if (!text.trim()) return;
    const over = bodyTooLarge(text);
    showComposeLimit(over);
    if (over) return;
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
el.compose.addEventListener('input', () => {
    autosize();
    if (!el.composeLimit.hidden) showComposeLimit(bodyTooLarge(el.compose.value));
});

const retryNow = () => {
    if (S.chat) S.chat.reconnectNow();
};
el.retry.addEventListener('click', retryNow);
el.noticeRetry.addEventListener('click', retryNow);
el.convMore.addEventListener('click', () => { if (S.chat && S.listMore) loadConversations(); });
/* the next page of conversations comes by itself when the sidebar is scrolled to its end */
el.sidebar.addEventListener('scroll', () => {
    const side = el.sidebar;
    if (S.chat && S.online && S.list === 'loaded' && S.listMore &&
        side.scrollHeight - side.scrollTop - side.clientHeight < 40) loadConversations();
}, { passive: true });
el.menu.addEventListener('click', () => setDrawer(!el.chatView.classList.contains('side-open')));
el.scrim.addEventListener('click', () => setDrawer(false));
el.logout.addEventListener('click', logout);
window.addEventListener('online', retryNow);
document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && narrow()) setDrawer(false);
});
document.addEventListener('visibilitychange', () => {
    const c = S.convs.get(S.active);
    if (!document.hidden && c && c.unread) {
        clearUnread(c);
        renderTitle();
    }
});
/* refresh "last seen 5 min ago" texts */
setInterval(() => { if (S.chat) renderPeople(); }, 60000);

let remembered = '';
try {
    remembered = sessionStorage.getItem('wsp.name') || '';
    el.name.value = remembered || localStorage.getItem('wsp.lastName') || '';
} catch (e) { /* storage disabled */ }
if (remembered && !nameProblem(remembered, 'name')) login(remembered);
else showLogin('');
