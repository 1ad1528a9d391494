/* Browser test of the chat page (web/) in Debian's headless Chromium against running wsproxy servers:
 * two users, offline direct messages replayed once and in order, a room message, acks that stick,
 * pushes and broadcasts through the API, the layout at 390 px; a server that refuses the page's
 * Origin; a token refreshed in place. Needs WSP_URL (server base URL); the others are optional (see
 * README.md). Writes screenshots to WSP_ARTIFACTS (default /tmp). */
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { chromium } = require('playwright-core');

const trim = (u) => (u || '').replace(/\/+$/, '');
const BASE = trim(process.env.WSP_URL);
const API = trim(process.env.WSP_API_URL);
const API_KEY = process.env.WSP_API_KEY || '';
const REFUSED = trim(process.env.WSP_REFUSED_URL);
const SHORT = trim(process.env.WSP_SHORT_URL);
const ARTIFACTS = process.env.WSP_ARTIFACTS || '/tmp';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 10000;

/* Distinct names per run: the server's database may outlive one run. */
const RUN = crypto.randomBytes(3).toString('hex');
const ALICE = 'alice' + RUN;
const BOB = 'bob' + RUN;
const DM1 = `hello ${BOB}, first while you were away <b>${RUN}</b>`;
const DM2 = `second one & still away ${RUN}`;
const ROOM_MSG = `lobby news ${RUN}`;
const PUSH_TEXT = `Your order shipped ${RUN}`;
const SHOP = 'shop' + RUN;
const ANNOUNCEMENT = `Maintenance at 22:00 ${RUN}`;
const FRANK = 'frank' + RUN;
const ATRIUM = 'atrium' + RUN;      /* closed rooms (the main server opens only lobby) */
const TEAM = 'team' + RUN;
const CLOSED = 'closed' + RUN;
const OLD_CONVS = 31;               /* more than one page (30) of the sidebar's list */
const oldPeer = (i) => `old${String(i).padStart(2, '0')}-${RUN}`;
const REPO = path.join(__dirname, '..', '..');

/* POST /api/v1/push on the API listener. */
async function push(frame) {
    const res = await fetch(API + '/api/v1/push', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + API_KEY },
        body: JSON.stringify(frame),
    });
    const text = await res.text();
    assert.equal(res.status, 202, `push answered ${res.status}: ${text}`);
    return JSON.parse(text);
}

/* Any API call; returns {status, json}. */
async function api(method, pathAndQuery, body) {
    const res = await fetch(API + pathAndQuery, {
        method,
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + API_KEY },
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
}

function launch() {
    return chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
}

/* Opens the page on base, checks the login view says nothing about a connection, logs in. */
async function login(browser, base, name, viewport) {
    const context = await browser.newContext({ viewport: viewport || { width: 1200, height: 760 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    await page.goto(base + '/', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#login-view:not([hidden])');
    assert.equal(await page.isVisible('#state'), false, 'no connection state before a login');
    await page.fill('#name', name);
    await page.click('#login');
    return { context, page };
}

const LAUNCH_ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic',
];

/* Every element the page shows for one conversation, in DOM order. */
function readThread(page, conv) {
    return page.$$eval(`.thread[data-conv="${conv}"] .msg`, (els) => els.map((e) => ({
        id: e.dataset.id || null,
        from: e.dataset.from,
        body: e.querySelector('.body').textContent,
        offline: e.classList.contains('offline'),
        label: (e.querySelector('.offline-label') || {}).textContent || null,
        pending: e.classList.contains('pending'),
    })));
}

/* Waits until the conversation holds a shown (acked or receipted) message with this body. */
function waitForBody(page, conv, body) {
    return page.waitForFunction(([c, b]) => Array.from(
        document.querySelectorAll(`.thread[data-conv="${c}"] .msg[data-id] .body`),
    ).some((n) => n.textContent === b), [conv, body], { timeout: WAIT_MS });
}

function attached(page, selector) {
    return page.waitForSelector(selector, { state: 'attached', timeout: WAIT_MS });
}

test('two users chat in headless Chromium', { skip: !BASE && 'WSP_URL is not set', timeout: 180000 },
    async (t) => {
        assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM} (apt-get install chromium)`);
        fs.mkdirSync(ARTIFACTS, { recursive: true });
        const browser = await launch();
        const pageErrors = [];
        const pages = {};
        let broken = false;

        async function step(name, fn) {
            await t.test(name, { skip: broken && 'an earlier step failed' }, async (st) => {
                try {
                    await fn(st);
                } catch (e) {
                    broken = true;
                    throw e;
                }
            });
        }

        async function open(name, viewport) {
            const { context, page } = await login(browser, BASE, name, viewport);
            page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
            await page.waitForSelector('#state[data-state="online"]');
            await attached(page, '#state[data-replayed="yes"]');
            await attached(page, '.thread[data-conv="room:lobby"][data-history="loaded"]');
            return { context, page };
        }

        async function send(page, text) {
            await page.fill('#compose', text);
            await page.click('#send');
        }

        try {
            await step('alice and bob log in and land in lobby', async () => {
                pages.alice = await open(ALICE);
                pages.bob = await open(BOB);
                for (const who of [pages.alice, pages.bob]) {
                    const active = await who.page.getAttribute('.conv.active', 'data-conv');
                    assert.equal(active, 'room:lobby');
                    assert.equal(await who.page.textContent('#state-text'), 'Online');
                }
            });

            await step('alice opens a conversation with bob and sees him online', async () => {
                const a = pages.alice.page;
                await a.fill('#dm-user', BOB);
                await a.click('#dm');
                await a.waitForSelector(`.conv.active[data-conv="dm:${BOB}"][data-presence="online"]`);
            });

            await step('bob goes offline and alice is told', async () => {
                await pages.bob.context.close();
                pages.bob = null;
                await pages.alice.page.waitForSelector(`.conv[data-conv="dm:${BOB}"][data-presence="offline"]`);
            });

            await step('alice sends bob two messages while he is away', async () => {
                const a = pages.alice.page;
                await send(a, DM1);
                await waitForBody(a, `dm:${BOB}`, DM1);
                await send(a, DM2);
                await waitForBody(a, `dm:${BOB}`, DM2);
                const mine = await readThread(a, `dm:${BOB}`);
                assert.deepEqual(mine.map((m) => m.body), [DM1, DM2]);
                assert.ok(mine.every((m) => m.id && !m.pending), 'both have a "sent" receipt');
            });

            await step('bob comes back and sees both once, in order, marked offline', async () => {
                pages.bob = await open(BOB);
                const b = pages.bob.page;
                const conv = `dm:${ALICE}`;
                await b.waitForSelector(`.conv[data-conv="${conv}"][data-unread="2"]`);
                await b.click(`.conv[data-conv="${conv}"]`);
                await attached(b, `.thread[data-conv="${conv}"][data-history="loaded"]`);
                const got = await readThread(b, conv);
                assert.deepEqual(got.map((m) => m.body), [DM1, DM2], 'each message exactly once, in order');
                assert.ok(Number(got[0].id) < Number(got[1].id), 'ids ascend');
                assert.ok(got.every((m) => m.offline && m.from === ALICE), 'both marked as offline');
                assert.equal(got[0].label, 'received while you were offline');
                assert.equal(await b.getAttribute(`.conv[data-conv="${conv}"]`, 'data-unread'), '0');
                const ids = await b.$$eval('.msg[data-id]', (els) => els.map((e) => e.dataset.id));
                assert.equal(new Set(ids).size, ids.length, 'no message id shown twice on the page');
                await pages.alice.page.waitForSelector(`.conv[data-conv="dm:${BOB}"][data-presence="online"]`);
            });

            await step('a lobby message reaches both', async () => {
                const a = pages.alice.page;
                const b = pages.bob.page;
                await a.click('.conv[data-conv="room:lobby"]');
                await send(a, ROOM_MSG);
                await waitForBody(a, 'room:lobby', ROOM_MSG);
                await waitForBody(b, 'room:lobby', ROOM_MSG);
                await b.waitForSelector('.conv[data-conv="room:lobby"][data-unread="1"]');
                await b.click('.conv[data-conv="room:lobby"]');
                const got = (await readThread(b, 'room:lobby')).filter((m) => m.body === ROOM_MSG);
                assert.equal(got.length, 1);
                assert.equal(got[0].offline, false, 'a live message is not marked offline');
                assert.ok(await b.isVisible(`.thread[data-conv="room:lobby"] .msg[data-id="${got[0].id}"]`));
                await b.click(`.conv[data-conv="dm:${ALICE}"]`);
            });

            await step('screenshots are saved', async () => {
                const file = path.join(ARTIFACTS, 'chat-bob.png');
                await pages.bob.page.screenshot({ path: file });
                await pages.alice.page.screenshot({ path: path.join(ARTIFACTS, 'chat-alice.png') });
                assert.ok(fs.statSync(file).size > 1000, `${file} written`);
                t.diagnostic(`screenshot: ${file}`);
            });

            await step('what bob acked is not replayed on his next visit', async () => {
                await pages.bob.context.close();
                pages.bob = await open(BOB);
                const b = pages.bob.page;
                assert.equal(await b.$$eval('.msg.offline', (els) => els.length), 0, 'nothing replayed');
                await b.fill('#dm-user', ALICE);
                await b.click('#dm');
                await attached(b, `.thread[data-conv="dm:${ALICE}"][data-history="loaded"]`);
                const got = await readThread(b, `dm:${ALICE}`);
                assert.deepEqual(got.map((m) => [m.body, m.offline]), [[DM1, false], [DM2, false]]);
            });

            await step('a pushed {"text": ...} body shows its text, marked as from the API', async (sub) => {
                if (!API) return sub.skip('WSP_API_URL is not set');
                const b = pages.bob.page;
                await push({ to: BOB, body: { text: PUSH_TEXT }, cid: 'order-' + RUN });
                await push({ to: BOB, from: SHOP, body: { order: 1234, state: 'shipped' } });
                await waitForBody(b, 'dm:system', PUSH_TEXT);
                await waitForBody(b, `dm:${SHOP}`, '{"order":1234,"state":"shipped"}');
                const sys = await b.$eval('.thread[data-conv="dm:system"] .msg', (n) => ({
                    service: n.classList.contains('service'),
                    label: n.querySelector('.service-label').hidden ? null : n.querySelector('.service-label').textContent,
                    json: n.querySelector('.body').classList.contains('json'),
                }));
                assert.deepEqual(sys, { service: true, label: 'via API', json: false });
                /* shop never connected to the chat: once its presence is known it is a push sender */
                await b.waitForSelector(`.thread[data-conv="dm:${SHOP}"] .msg.service`, { state: 'attached' });
                assert.ok(await b.$eval(`.thread[data-conv="dm:${SHOP}"] .msg .body`, (n) => n.classList.contains('json')));
                await b.waitForSelector(`#services .person[data-user="${SHOP}"]`, { state: 'attached' });
                const people = await b.$$eval('#people .person', (els) => els.map((e) => e.dataset.user));
                const services = await b.$$eval('#services .person', (els) => els.map((e) => e.dataset.user));
                assert.deepEqual(services.sort(), ['system', SHOP].sort(), 'push senders apart');
                assert.ok(people.includes(ALICE) && people.includes(BOB), `people: ${people}`);
                assert.ok(!people.includes('system') && !people.includes(SHOP), `no push sender among people: ${people}`);
            });

            await step('a broadcast is an announcement on every page, not an error', async (sub) => {
                if (!API) return sub.skip('WSP_API_URL is not set');
                await push({ broadcast: true, body: { text: ANNOUNCEMENT } });
                for (const p of [pages.alice.page, pages.bob.page]) {
                    await p.waitForSelector('#announcements .announce');
                    assert.equal(await p.textContent('#announcements .announce .body'), ANNOUNCEMENT);
                    assert.equal(await p.textContent('#announcements .announce-title'), 'Announcement');
                    const toast = await p.$eval('#toast', (n) => ({ hidden: n.hidden, kind: n.dataset.kind, text: n.textContent }));
                    assert.ok(toast.hidden || !toast.text.includes(ANNOUNCEMENT), 'not a toast');
                }
                await pages.bob.page.click('.conv[data-conv="dm:system"]');
                await pages.bob.page.screenshot({ path: path.join(ARTIFACTS, 'chat-announcement.png') });
                await pages.alice.page.click('#announcements .announce-close');
                assert.equal(await pages.alice.page.$$eval('#announcements .announce', (e) => e.length), 0);
            });

            await step('the header and the sidebar count the same people online', async () => {
                const a = pages.alice.page;
                await a.click('.conv[data-conv="room:lobby"]');
                await a.waitForFunction(() => /members/.test(document.getElementById('conv-sub').textContent));
                await a.waitForFunction(() => {
                    const h = document.getElementById('conv-sub').textContent.match(/(\d+) online/);
                    const s = document.getElementById('online-count').textContent.match(/^(\d+) of/);
                    return h && s && h[1] === s[1];
                });
                const header = await a.textContent('#conv-sub');
                const side = await a.textContent('#online-count');
                /* alice and bob are online; a reused database may hold older, offline members */
                assert.match(header, /^\d+ members · 2 online$/);
                assert.match(side, /^2 of \d+ online$/);
            });

            await step('on a 390 px screen the sidebar is a drawer; long messages are refused, not cut', async () => {
                pages.carol = await open('carol' + RUN, { width: 390, height: 844 });
                const c = pages.carol.page;
                assert.equal(await c.isVisible('#sidebar'), false, 'sidebar collapsed');
                assert.ok(await c.isVisible('#menu'), 'menu button shown');
                const box = await c.$eval('#messages', (n) => n.getBoundingClientRect().width);
                assert.ok(box > 380, `the conversation takes the width (${box} px)`);
                await c.screenshot({ path: path.join(ARTIFACTS, 'chat-390.png') });
                await c.click('#menu');
                await c.waitForSelector('#sidebar', { state: 'visible' });
                await c.waitForTimeout(300);   /* the drawer slides in */
                await c.screenshot({ path: path.join(ARTIFACTS, 'chat-390-drawer.png') });
                await c.click('.conv[data-conv="room:lobby"]');
                await c.waitForSelector('#sidebar', { state: 'hidden' });

                const long = 'x'.repeat(70000);
                await c.fill('#compose', long);
                await c.click('#send');
                await c.waitForSelector('#compose-limit', { state: 'visible' });
                assert.match(await c.textContent('#compose-limit'), /too long.*64 KiB/);
                assert.equal((await c.inputValue('#compose')).length, long.length, 'the text is kept whole');
                assert.equal(await c.$$eval('.msg.mine', (e) => e.length), 0, 'nothing sent');
                await c.screenshot({ path: path.join(ARTIFACTS, 'chat-390-too-long.png') });
                await c.fill('#compose', '');
                t.diagnostic(`screenshots: ${path.join(ARTIFACTS, 'chat-390*.png')}`);
            });

            await step('a new device of a user with DMs and rooms gets the conversation list', async (sub) => {
                if (!API) return sub.skip('WSP_API_URL is not set');
                /* frank wrote to many people (through the API): nothing of it is replayed to him, only
                 * the list knows these conversations */
                const pushes = [];
                for (let i = 0; i < OLD_CONVS; i += 1) {
                    pushes.push({ to: oldPeer(i), from: FRANK, body: { text: `old ${i}` } });
                }
                const batch = await api('POST', '/api/v1/push/batch', { pushes });
                assert.ok(batch.status < 300, `batch: ${batch.status} ${JSON.stringify(batch.json)}`);
                /* alice writes to him twice from the page */
                const a = pages.alice.page;
                await a.fill('#dm-user', FRANK);
                await a.click('#dm');
                await send(a, `frank 1 ${RUN}`);
                await waitForBody(a, `dm:${FRANK}`, `frank 1 ${RUN}`);
                await send(a, `frank 2 ${RUN}`);
                await waitForBody(a, `dm:${FRANK}`, `frank 2 ${RUN}`);
                /* the backend puts him in two closed rooms; one gets three messages */
                for (const room of [ATRIUM, TEAM]) {
                    const r = await api('POST', `/api/v1/rooms/${room}/members`, { user: FRANK });
                    assert.equal(r.status, 200, JSON.stringify(r.json));
                }
                for (let i = 1; i <= 3; i += 1) await push({ room: TEAM, from: SHOP, body: { text: `team ${i}` } });
                await push({ to: FRANK, body: { text: `welcome ${RUN}` } });

                const { context, page: f } = await login(browser, BASE, FRANK);
                pages.frank = { context, page: f };
                f.on('pageerror', (e) => pageErrors.push(`frank: ${e.message}`));
                await f.waitForSelector('#state[data-state="online"]');
                await attached(f, '#sidebar[data-list="loaded"]');
                await attached(f, '#state[data-replayed="yes"]');
                await f.waitForTimeout(300);    /* acks and late frames: the counts must not move */
                const unread = (conv) => f.getAttribute(`.conv[data-conv="${conv}"]`, 'data-unread');
                assert.equal(await unread('dm:system'), '1');
                assert.equal(await unread(`dm:${ALICE}`), '2', 'the replay is not counted twice');
                assert.equal(await unread(`room:${TEAM}`), '3');
                assert.equal(await unread(`dm:${oldPeer(OLD_CONVS - 1)}`), '0');
                const order = (list) => f.$$eval(`#${list} .conv`, (els) => els.map((e) => e.dataset.conv));
                assert.deepEqual((await order('dms')).slice(0, 3), ['dm:system', `dm:${ALICE}`, `dm:${oldPeer(OLD_CONVS - 1)}`],
                    'newest first');
                assert.deepEqual(await order('rooms'), [`room:${TEAM}`, `room:${ATRIUM}`]);
                const preview = (conv) => f.textContent(`.conv[data-conv="${conv}"] .conv-preview`);
                assert.equal(await preview(`dm:${ALICE}`), `frank 2 ${RUN}`);
                assert.equal(await preview(`dm:${oldPeer(OLD_CONVS - 1)}`), `You: old ${OLD_CONVS - 1}`);
                assert.equal(await preview(`room:${TEAM}`), `${SHOP}: team 3`);
                assert.ok(await f.isVisible(`.conv[data-conv="dm:${ALICE}"] .unread`));
                assert.equal(await f.$(`.conv[data-conv="dm:${oldPeer(0)}"]`), null, 'the oldest are on the next page');
                assert.ok(await f.isVisible('#conv-more'), 'a "more" button');
                await f.screenshot({ path: path.join(ARTIFACTS, 'chat-conversations.png') });
                await f.click('#conv-more');
                await attached(f, `.conv[data-conv="dm:${oldPeer(0)}"]`);
                await f.waitForSelector('#conv-more', { state: 'hidden' });
                assert.equal((await order('dms')).filter((c) => c.startsWith('dm:old')).length, OLD_CONVS);
                assert.equal(await preview(`dm:${oldPeer(0)}`), 'You: old 0');
                /* opening a conversation reads it */
                await f.click(`.conv[data-conv="room:${TEAM}"]`);
                await waitForBody(f, `room:${TEAM}`, 'team 3');
                assert.equal(await unread(`room:${TEAM}`), '0');
                assert.equal(await f.textContent(`.thread[data-conv="room:${TEAM}"] .msg[data-via="api"] .service-label`), 'via API');
            });

            await step('room access: a closed room, a removal, a deleted message', async (sub) => {
                if (!API) return sub.skip('WSP_API_URL is not set');
                const f = pages.frank.page;
                await f.fill('#join-room', CLOSED);
                await f.click('#join');
                await attached(f, `.thread[data-conv="room:${CLOSED}"][data-access="forbidden"]`);
                const note = `.thread[data-conv="room:${CLOSED}"] .empty`;
                assert.ok(await f.isVisible(note));
                assert.equal(await f.textContent(note), 'This room is closed: ask to be added.');
                assert.equal(await f.textContent('#conv-sub'), 'This room is closed: ask to be added.');
                await f.screenshot({ path: path.join(ARTIFACTS, 'chat-forbidden.png') });
                assert.equal(await f.isVisible('#compose-form'), false, 'nothing to write there');
                assert.equal(await f.textContent('#leave'), 'Close');
                await f.click('#leave');
                await f.waitForSelector(`.conv[data-conv="room:${CLOSED}"]`, { state: 'detached' });
                /* the backend lets him in: the room comes back, joined, and he is told */
                assert.equal((await api('POST', `/api/v1/rooms/${CLOSED}/members`, { user: FRANK })).status, 200);
                await f.waitForSelector('.access-note[data-reason="added"]');
                assert.equal(await f.textContent('.access-note[data-reason="added"] .body'), `You were added to #${CLOSED}.`);
                await attached(f, `.conv[data-conv="room:${CLOSED}"]:not([data-access])`);

                assert.equal((await api('DELETE', `/api/v1/rooms/${TEAM}/members/${FRANK}`)).status, 204);
                await f.waitForSelector('.access-note[data-reason="removed"]');
                assert.equal(await f.textContent('.access-note[data-reason="removed"] .body'), `You were removed from #${TEAM}.`);
                assert.equal(await f.$(`.conv[data-conv="room:${TEAM}"]`), null, 'the room left the sidebar');

                const a = pages.alice.page;
                const id = await a.getAttribute(`.thread[data-conv="dm:${FRANK}"] .msg[data-id]`, 'data-id');
                assert.equal((await api('DELETE', `/api/v1/messages/${id}`)).status, 204);
                await f.click(`.conv[data-conv="dm:${ALICE}"]`);
                await attached(f, `.msg[data-id="${id}"][data-deleted="yes"]`);
                assert.equal(await f.textContent(`.msg[data-id="${id}"] .body`), 'This message was deleted.');
            });

            await step('no script errors in any page', async () => {
                assert.deepEqual(pageErrors, []);
            });
        } finally {
            /* leave evidence of a failure behind, next to the screenshot of a passing run */
            if (broken) {
                for (const [who, p] of Object.entries(pages)) {
                    if (!p) continue;
                    await p.page.screenshot({ path: path.join(ARTIFACTS, `chat-${who}-failed.png`) })
                        .catch(() => {});
                }
            }
            await browser.close();
        }
    });

test('the page serves the same client library as clients/js', () => {
    const canonical = fs.readFileSync(path.join(REPO, 'clients', 'js', 'wsproxy.js'), 'utf8');
    const served = fs.readFileSync(path.join(REPO, 'web', 'wsproxy.js'), 'utf8');
    assert.ok(served === canonical,
        'web/wsproxy.js differs from clients/js/wsproxy.js: cp clients/js/wsproxy.js web/wsproxy.js');
});

test('the name rule is stated in characters', { skip: !BASE && 'WSP_URL is not set', timeout: 60000 },
    async () => {
        const browser = await launch();
        try {
            /* 33 characters, 66 bytes of UTF-8: over the server's 64-byte rule */
            const { page } = await login(browser, BASE, 'é'.repeat(33));
            await page.waitForSelector('#login-error:not([hidden])');
            const msg = await page.textContent('#login-error');
            assert.match(msg, /at most 64 characters/);
            assert.match(msg, /counts as 66/);
            assert.doesNotMatch(msg, /bytes/);
            assert.match(await page.textContent('#name-rule'), /64 characters/);
            assert.equal(await page.inputValue('#name'), 'é'.repeat(33), 'the name is not cut');
            assert.equal(await page.isVisible('#state'), false);
        } finally {
            await browser.close();
        }
    });

test('a server that refuses the page\'s Origin is reported, not retried in a loop',
    { skip: !REFUSED && 'WSP_REFUSED_URL is not set', timeout: 60000 }, async () => {
        const browser = await launch();
        try {
            const { page } = await login(browser, REFUSED, 'dave' + RUN);
            const errors = [];
            page.on('pageerror', (e) => errors.push(e.message));
            await page.waitForSelector('#state[data-state="refused"]', { timeout: 20000 });
            assert.equal(await page.textContent('#state-text'), 'Refused by server');
            assert.ok(await page.isVisible('#notice'));
            assert.match(await page.textContent('#notice-title'), /refused the connection/);
            assert.ok(await page.isVisible('#notice-retry'));
            /* it keeps saying so while it retries in the background */
            for (let i = 0; i < 6; i += 1) {
                await page.waitForTimeout(500);
                assert.doesNotMatch(await page.textContent('#state-text'), /Reconnecting/);
            }
            await page.screenshot({ path: path.join(ARTIFACTS, 'chat-refused.png') });
            assert.deepEqual(errors, []);
        } finally {
            await browser.close();
        }
    });

test('a short-lived token is refreshed on the open connection',
    { skip: !SHORT && 'WSP_SHORT_URL is not set', timeout: 60000 }, async () => {
        const browser = await launch();
        try {
            const context = await browser.newContext();
            const page = await context.newPage();
            page.setDefaultTimeout(WAIT_MS);
            const errors = [];
            let tokenRequests = 0;
            let sockets = 0;
            page.on('pageerror', (e) => errors.push(e.message));
            page.on('request', (r) => { if (new URL(r.url()).pathname === '/demo/token') tokenRequests += 1; });
            page.on('websocket', () => { sockets += 1; });
            await page.goto(SHORT + '/', { waitUntil: 'domcontentloaded' });
            await page.fill('#name', 'erin' + RUN);
            await page.click('#login');
            await page.waitForSelector('#state[data-state="online"]');
            const session = await page.getAttribute('#state', 'data-session');
            const since = Date.now();
            /* tokens live 6 s and the server allows 1 s of leeway: without a refresh the server
             * closes the connection at 7 s with "token expired" */
            await page.waitForFunction(() => Number(document.getElementById('state').dataset.refreshes || 0) >= 2,
                null, { timeout: 25000 });
            if (Date.now() - since < 9000) await page.waitForTimeout(9000 - (Date.now() - since));
            const refreshes = Number(await page.getAttribute('#state', 'data-refreshes'));
            assert.equal(await page.getAttribute('#state', 'data-session'), session, 'same session');
            assert.equal(await page.getAttribute('#state', 'data-drops'), null, 'never disconnected');
            assert.equal(await page.textContent('#state-text'), 'Online');
            assert.equal(sockets, 1, 'one WebSocket');
            assert.equal(tokenRequests, refreshes + 1, 'one token fetch per refresh, plus the login');
            assert.deepEqual(errors, []);
        } finally {
            await browser.close();
        }
    });
