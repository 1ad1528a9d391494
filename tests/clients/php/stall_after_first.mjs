/* stall_after_first.mjs -- an HTTP server that answers the first request on each connection with
 * {"users":[]} and never answers a second one: a total timeout on a reused keep-alive connection.
 * Prints its port, then serves until its stdin closes. */
import http from 'node:http';

const answered = new WeakSet();
const server = http.createServer((req, res) => {
    if (answered.has(req.socket)) return;
    answered.add(req.socket);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"users":[]}');
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
