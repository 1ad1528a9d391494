/* Browser test of the chat page (web/) in Debian's headless Chromium against a running wsproxy:
 * two users, offline direct messages replayed once and in order, a room message, acks that stick.
 * Needs WSP_URL (server base URL); writes screenshots to WSP_ARTIFACTS (default /tmp). */
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { chromium } = require('playwright-core');

const BASE = (process.env.WSP_URL || '').replace(/\/+$/, '');
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
        const browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
        const pageErrors = [];
        const pages = {};
        let broken = false;

        async function step(name, fn) {
            await t.test(name, { skip: broken && 'an earlier step failed' }, async () => {
                try {
                    await fn();
                } catch (e) {
                    broken = true;
                    throw e;
                }
            });
        }

        async function open(name) {
            const context = await browser.newContext({ viewport: { width: 1200, height: 760 } });
            const page = await context.newPage();
            page.setDefaultTimeout(WAIT_MS);
            page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
            await page.goto(BASE + '/', { waitUntil: 'domcontentloaded' });
            await page.fill('#name', name);
            await page.click('#login');
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

            await step('no script errors in either page', async () => {
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
