/* listen.mjs -- a chat client for the PHP tests: node listen.mjs WS_URL TOKEN [ROOM...]
 * Prints every frame it gets as one JSON line, joins the rooms after the welcome, acks every message
 * for it (as a client app would), prints {"type":"closed",code,reason} and exits when the server
 * closes, sends each line of its stdin as a frame, and closes when its stdin does. */
import WebSocket from 'ws';

const [url, token, ...rooms] = process.argv.slice(2);
const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`);
let user = null;
const out = (f) => process.stdout.write(JSON.stringify(f) + '\n');

ws.on('message', (data) => {
    const f = JSON.parse(data.toString());
    out(f);
    if (f.type === 'welcome') {
        user = f.user;
        for (const room of rooms) ws.send(JSON.stringify({ type: 'join', room }));
    } else if (f.type === 'msg' && (f.room !== undefined || f.to === user)) {
        ws.send(JSON.stringify({ type: 'ack', id: f.id }));
    }
});
ws.on('unexpected-response', (req, res) => {
    out({ type: 'refused', status: res.statusCode });
    process.exit(1);
});
ws.on('error', (e) => out({ type: 'socket-error', message: e.message }));
ws.on('close', (code, reason) => {
    out({ type: 'closed', code, reason: reason.toString() });
    process.exit(0);
});
let pending = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.trim() !== '') ws.send(line);
    }
});
process.stdin.on('end', () => ws.close(1000));
