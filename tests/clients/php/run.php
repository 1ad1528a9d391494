<?php

/*
 * run.php -- tests of clients/php (Wsproxy\Client) against the real wsproxy.
 * php tests/clients/php/run.php   (WSP_BIN: the server binary, default build/wsproxy)
 * Delivery is checked from both ends: a chat connection (listen.mjs) that gets and acks the frames,
 * and the API's own history and receipts. Ends with "N passed, N failed".
 */

declare(strict_types=1);

require __DIR__ . '/harness.php';
require __DIR__ . '/webhook.php';
require __DIR__ . '/webhook_e2e.php';

use Wsproxy\Client;
use Wsproxy\Exception\ApiException;
use Wsproxy\Exception\BadRequestException;
use Wsproxy\Exception\ConnectionException;
use Wsproxy\Exception\InvalidArgumentException;
use Wsproxy\Exception\NotFoundException;
use Wsproxy\Exception\PayloadTooLargeException;
use Wsproxy\Exception\TimeoutException;
use Wsproxy\Exception\UnauthorizedException;
use Wsproxy\Exception\WsproxyException;

$bin = getenv('WSP_BIN') ?: 'build/wsproxy';
$bin = str_starts_with($bin, '/') ? $bin : ROOT . '/' . $bin;
$srv = new WspServer();
register_shutdown_function(fn () => $srv->stop());   /* also after a fatal error */
$srv->start($bin);
$api = new Client($srv->apiUrl(), API_KEY, connectTimeout: 1.0, timeout: 5.0);
$t = new Runner();
webhook_tests($t);
webhook_e2e_tests($t, $bin);

$t->test('push to an offline user: stored, replayed on connect, delivered once acked', function (Runner $t) use ($srv, $api) {
    $r = $api->pushToUser('alice', ['text' => 'Your order shipped'], cid: 'order-1-shipped', from: 'shop');
    same([0, false], [$r->live, $r->duplicate], 'nobody was connected');
    check($r->id > 0 && $r->ts > 1e12, 'an id and a time in ms');

    $m = $api->message($r->id);
    same(['shop', 'alice', ['text' => 'Your order shipped'], 'order-1-shipped', 'stored', null],
        [$m['from'], $m['to'], $m['body'], $m['cid'], $m['state'], $m['delivered_at']], 'the stored message');
    $page = $api->conversation('alice', 'shop');
    same([$r->id], array_column($page->items, 'id'), 'the history of alice and shop');

    $alice = new Listener($srv, 'alice');
    $t->defer(fn () => $alice->stop());
    $f = $alice->frame(fn ($f) => $f['type'] === 'msg', 'the replayed push');
    same([$r->id, true, 'shop'], [$f['id'], $f['replay'], $f['from']], 'the replay');
    $m = wait_for(function () use ($api, $r) {
        $m = $api->message($r->id);
        return $m['state'] === 'delivered' ? $m : null;
    }, 'the ack');
    check(is_int($m['delivered_by']) && $m['delivered_at'] >= $r->ts, 'who acked, and when');
    same('alice', $api->session($m['delivered_by'])['user'], 'the acking session is alice\'s');
});

$t->test('push to a live user reaches the connection at once', function (Runner $t) use ($srv, $api) {
    $bob = new Listener($srv, 'bob');
    $t->defer(fn () => $bob->stop());
    $r = $api->pushToUser('bob', 'ping');
    same(1, $r->live, 'one live connection');
    $f = $bob->frame(fn ($f) => $f['type'] === 'msg', 'the push');
    same([$r->id, 'system', 'bob', 'ping', false], [$f['id'], $f['from'], $f['to'], $f['body'], isset($f['replay'])],
        'the msg frame');
});

$t->test('a cid makes a push idempotent', function () use ($api) {
    $first = $api->pushToUser('carol', ['n' => 1], cid: 'invoice-7');
    $again = $api->pushToUser('carol', ['n' => 2], cid: 'invoice-7');
    same([$first->id, $first->ts, true, 0], [$again->id, $again->ts, $again->duplicate, $again->live], 'the first receipt');
    same(1, count($api->conversation('carol', 'system')->items), 'stored once');
    same(['n' => 1], $api->message($first->id)['body'], 'the first body stays');
});

$t->test('push to several users: one atomic request, idempotent as a whole', function () use ($srv, $api) {
    $client = new Client($srv->apiUrl(), API_KEY);
    $users = ['dan', 'eve', 'fay'];
    $first = $client->pushToUsers([...$users, 'eve'], 'sale', cid: 'sale-1');
    same($users, array_keys($first), 'one result per user, repeats sent once');
    same(3, count(array_unique(array_map(fn ($r) => $r->id, $first))), 'one message each');
    same(['requests' => 1, 'connects' => 1], $client->stats(), 'one request');
    same(['sale-1/eve', 'sale-1/eve', 'eve'], [$first['eve']->cid, $api->message($first['eve']->id)['cid'], $first['eve']->to],
        'a cid per user');

    $again = $client->pushToUsers($users, 'sale', cid: 'sale-1');
    same(array_map(fn ($r) => [$r->id, true], $first), array_map(fn ($r) => [$r->id, $r->duplicate], $again),
        'a retry stores nothing new');

    throws(BadRequestException::class, fn () => $client->pushToUsers(['gus', "bad\nname", 'hal'], 'x', cid: 'sale-2'),
        'one bad user id');
    same([[], []], [$api->conversation('gus', 'system')->items, $api->conversation('hal', 'system')->items],
        'nothing stored for the others');
    same(['10', '1e1'], array_values(array_map(fn ($r) => $r->to, $client->pushToUsers(['10', '1e1'], 'x'))),
        'ids compared as strings (PHP makes the key "10" an int: PushResult::$to keeps the string)');
    throws(BadRequestException::class, fn () => $client->pushToUsers(array_map(fn ($i) => "many-$i", range(1, 101)), 'x'),
        'over [api] max_recipients');
    same([], $api->conversation('many-1', 'system')->items, 'nothing stored for an oversized list');
    same([], $client->pushToUsers([], 'x'), 'no users, no request');
    same(5, $client->stats()['requests'], 'the empty call sent nothing');
});

$t->test('pushBatch: results in order; one invalid push stores nothing', function () use ($api) {
    $rs = $api->pushBatch([
        ['to' => 'ann', 'body' => ['n' => 1], 'cid' => 'b-1'],
        ['room' => 'batch-room', 'body' => 'two', 'from' => 'editor'],
    ]);
    same([['ann', null, 'b-1'], [null, 'batch-room', null]], array_map(fn ($r) => [$r->to, $r->room, $r->cid], $rs),
        'one result per push, in order');
    same(['ann', ['n' => 1], 'b-1', 'api'], array_map(fn ($k) => $api->message($rs[0]->id)[$k] ?? null, ['to', 'body', 'cid', 'via']),
        'the direct one stored');
    same(['editor', 'two'], [$api->roomHistory('batch-room')->items[0]['from'], $api->roomHistory('batch-room')->items[0]['body']],
        'the room one stored');
    $again = $api->pushBatch([['to' => 'ann', 'body' => ['n' => 1], 'cid' => 'b-1']]);
    same([$rs[0]->id, true], [$again[0]->id, $again[0]->duplicate], 'a cid makes a batch push idempotent');

    $e = throws(BadRequestException::class, fn () => $api->pushBatch([
        ['to' => 'kay', 'body' => 'ok'],
        ['room' => 'batch-room', 'body' => 'ok'],
        ['to' => "bad\nname", 'body' => 'x'],
    ]), 'an invalid third push');
    check(str_contains($e->getMessage(), 'push 2'), 'the message names the push (from 0): ' . $e->getMessage());
    same([], $api->conversation('kay', 'system')->items, 'nothing stored for kay');
    same(1, count($api->roomHistory('batch-room')->items), 'nothing stored for the room');
    throws(BadRequestException::class, fn () => $api->pushBatch([['broadcast' => true, 'body' => 1]]), 'no broadcast in a batch');
    throws(InvalidArgumentException::class, fn () => $api->pushBatch([]), 'an empty batch');
    throws(InvalidArgumentException::class, fn () => $api->pushBatch([['to' => 'ann']]), 'a push without a body');
});

$t->test('push to a room: live members get it, history pages it', function (Runner $t) use ($srv, $api) {
    $dora = new Listener($srv, 'dora', ['news']);
    $t->defer(fn () => $dora->stop());
    $ids = [];
    foreach (['one', 'two', 'three'] as $text) {
        $r = $api->pushToRoom('news', $text, cid: "news-$text", from: 'editor');
        same([1, 1, 'news'], [$r->live, $r->members, $r->room], "dora is live for $text");
        $ids[] = $r->id;
    }
    $f = $dora->frame(fn ($f) => $f['type'] === 'msg' && $f['body'] === 'three', 'the third');
    same(['news', 'editor'], [$f['room'], $f['from']], 'a room message');
    $p1 = $api->roomHistory('news', limit: 2);
    same([[$ids[2], $ids[1]], true, $ids[1]], [array_column($p1->items, 'id'), $p1->more, $p1->nextBefore], 'page 1');
    $p2 = $api->roomHistory('news', before: $p1->nextBefore, limit: 2);
    same([[$ids[0]], false, null], [array_column($p2->items, 'id'), $p2->more, $p2->nextBefore], 'page 2');
    same('api', $f['via'], 'a pushed message is marked');
    same([0, 0], [$api->pushToRoom('nobody-here', 'x')->members, $api->pushToRoom('nobody-here', 'x')->live],
        'members: 0 tells a room nobody is in');
    same(null, $api->pushToUser('dora', 'x')->members, 'no members for a direct push');
});

$t->test('a closed room: an added member gets in, a removed one is forbidden', function (Runner $t) use ($bin) {
    $srv2 = (new WspServer(['rooms' => ['open' => 'public-*']]))->start($bin);
    $t->defer(fn () => $srv2->stop());
    $api2 = new Client($srv2->apiUrl(), API_KEY);
    $lee = new Listener($srv2, 'lee');
    $t->defer(fn () => $lee->stop());
    $lee->send(['type' => 'join', 'room' => 'team']);
    same('forbidden', $lee->frame(fn ($f) => $f['type'] === 'error', 'the refused join')['code'], 'not a member yet');

    same(true, $api2->addMember('team', 'lee'), 'added');
    same('added', $lee->frame(fn ($f) => $f['type'] === 'joined' && $f['room'] === 'team', 'joined')['reason'] ?? null,
        'the live connection is told');
    same(false, $api2->addMember('team', 'lee'), 'adding again');
    same(true, $api2->addMember('team', 'kim'), 'kim added while offline');
    $kim = new Listener($srv2, 'kim', ['team']);   /* waits for "joined": the join is allowed now */
    $t->defer(fn () => $kim->stop());

    $r = $api2->pushToRoom('team', 'standup');
    same([2, 2], [$r->members, $r->live], 'both members get it');
    $kim->frame(fn ($f) => $f['type'] === 'msg' && $f['body'] === 'standup', 'kim gets the room');
    $members = $api2->members('team');
    usort($members, fn ($a, $b) => strcmp($a['user'], $b['user']));
    same([['kim', 'online', 1], ['lee', 'online', 1]], array_map(fn ($m) => [$m['user'], $m['state'], $m['connections']], $members),
        'members with presence');

    $api2->removeMember('team', 'lee');
    same('removed', $lee->frame(fn ($f) => $f['type'] === 'left' && $f['room'] === 'team', 'left')['reason'] ?? null, 'lee is told');
    $lee->send(['type' => 'send', 'room' => 'team', 'body' => 'hi', 'cid' => 'l1']);
    same('forbidden', $lee->frame(fn ($f) => $f['type'] === 'error' && ($f['cid'] ?? null) === 'l1', 'the refused send')['code'],
        'a removed member cannot send');
    $n = count(array_filter($lee->frames, fn ($f) => $f['type'] === 'error' && $f['code'] === 'forbidden' && !isset($f['cid'])));
    $lee->send(['type' => 'join', 'room' => 'team']);
    $lee->frame(function ($f) use (&$n) {
        return $f['type'] === 'error' && $f['code'] === 'forbidden' && !isset($f['cid']) && --$n < 0;
    }, 'the second refused join');
    same(['kim'], array_column($api2->members('team'), 'user'), 'kim stays');
    $e = throws(NotFoundException::class, fn () => $api2->removeMember('team', 'lee'), 'removing again');
    same('not_found', $e->getErrorCode(), 'its code');
});

$t->test('rooms: listing and paging, members, %-encoded names, deleting', function () use ($api) {
    $names = ['zz-a/b c?d#e', 'zz-..', 'zz-%2F ü'];
    foreach ($names as $name) {
        same(true, $api->addMember($name, 'uma'), "uma added to $name");
    }
    $api->addMember('zz-a/b c?d#e', 'vic');
    $members = array_column($api->members('zz-a/b c?d#e'), 'user');
    sort($members);
    same(['uma', 'vic'], $members, 'the members of a name that needs encoding');
    same(['offline', 0, null], array_map(fn ($k) => $api->members('zz-..')[0][$k], ['state', 'connections', 'last_seen']),
        'an offline member never seen');

    $sorted = $names;
    sort($sorted, SORT_STRING);
    $p1 = $api->rooms(after: 'zz', limit: 2);
    same([array_slice($sorted, 0, 2), $sorted[1]], [array_column($p1->rooms, 'name'), $p1->nextAfter], 'page 1');
    $p2 = $api->rooms(after: $p1->nextAfter, limit: 2);
    same([[$sorted[2]], null], [array_column($p2->rooms, 'name'), $p2->nextAfter], 'page 2');
    $room = $p1->rooms[0];
    same([true, 1], [is_bool($room['open']), $room['members']], 'a room entry');

    foreach ($names as $name) {
        $api->deleteRoom($name);
    }
    same([], $api->rooms(after: 'zz')->rooms, 'gone');
    same([], $api->members('zz-..'), 'no members');
    throws(NotFoundException::class, fn () => $api->deleteRoom('zz-..'), 'deleting again');
    throws(InvalidArgumentException::class, fn () => $api->members(''), 'an empty name');
    throws(BadRequestException::class, fn () => $api->rooms(limit: 1001), 'a limit over 1000');
});

$t->test('conversations: rooms and peers, newest first, unread, paging', function () use ($api) {
    $api->addMember('wes-room', 'wes');
    $d = $api->pushToUser('wes', ['text' => 'your order'], from: 'shop');
    $api->pushToUser('wes', 'second', from: 'shop');
    $r = $api->pushToRoom('wes-room', 'room news', from: 'editor');
    $all = $api->conversations('wes');
    same([['wes-room', null, $r->id, 1], [null, 'shop', $d->id + 1, 2]],
        array_map(fn ($c) => [$c['room'] ?? null, $c['with'] ?? null, $c['last']['id'], $c['unread']], $all->items),
        'the room first (newest), then the peer');
    same(['editor', 'api'], [$all->items[0]['last']['from'], $all->items[0]['last']['via'] ?? null], 'the last message');
    same([false, null], [$all->more, $all->nextBefore], 'one page');
    $p1 = $api->conversations('wes', limit: 1);
    same([1, true], [count($p1->items), $p1->more], 'page 1');
    $p2 = $api->conversations('wes', before: $p1->nextBefore, limit: 1);
    same(['shop', false], [$p2->items[0]['with'] ?? null, $p2->more], 'page 2');
    same([], $api->conversations('nobody-at-all')->items, 'a user without any');
});

$t->test('deleteMessage: gone from history, live connections told, 404 after', function (Runner $t) use ($srv, $api) {
    $xan = new Listener($srv, 'xan');
    $t->defer(fn () => $xan->stop());
    $keep = $api->pushToUser('xan', 'keep');
    $gone = $api->pushToUser('xan', 'oops');
    $xan->frame(fn ($f) => $f['type'] === 'msg' && $f['id'] === $gone->id, 'the message');
    $api->deleteMessage($gone->id);
    $xan->frame(fn ($f) => $f['type'] === 'deleted' && $f['id'] === $gone->id, 'the deleted frame');
    same([$keep->id], array_column($api->conversation('xan', 'system')->items, 'id'), 'gone from history');
    same(true, $api->conversations('xan')->items[0]['last']['deleted'] ?? null, 'the conversation shows a deleted last message');
    $e = throws(NotFoundException::class, fn () => $api->deleteMessage($gone->id), 'deleting again');
    same('not_found', $e->getErrorCode(), 'its code');
    throws(InvalidArgumentException::class, fn () => $api->deleteMessage(0), 'id 0');
});

$t->test('broadcast reaches every live connection', function (Runner $t) use ($srv, $api) {
    $gil = new Listener($srv, 'gil');
    $t->defer(fn () => $gil->stop());
    $live = $api->broadcast(['reload' => true], cid: 'deploy-42');
    check($live >= 1, "reached $live connections");
    $f = $gil->frame(fn ($f) => $f['type'] === 'broadcast', 'the broadcast');
    same([['reload' => true], 'deploy-42', 'system'], [$f['body'], $f['cid'], $f['from']], 'the broadcast frame');
});

$t->test('sessions: list, get, kick, and kicking again', function (Runner $t) use ($srv, $api) {
    $hank = new Listener($srv, 'hank');
    $t->defer(fn () => $hank->stop());
    $page = $api->sessions(user: 'hank', state: 'active');
    same(1, count($page->sessions), 'one live session');
    $id = $page->sessions[0]['id'];
    same(['hank', 'active'], [$api->session($id)['user'], $api->session($id)['state']], 'the session');

    $api->kick($id);
    $closed = $hank->frame(fn ($f) => $f['type'] === 'closed', 'the close');
    same([1008, 'kicked'], [$closed['code'], $closed['reason']], 'the close frame');
    same(['ended', 'kicked'], [$api->session($id)['state'], $api->session($id)['end_reason']], 'the row');
    $e = throws(NotFoundException::class, fn () => $api->kick($id), 'a second kick');
    same([404, 'not_live'], [$e->getStatus(), $e->getErrorCode()], 'nothing left to kick');
    $e = throws(NotFoundException::class, fn () => $api->session(987654321), 'an unknown session');
    same([404, 'not_found'], [$e->getStatus(), $e->getErrorCode()], 'unknown session');

    $older = $api->sessions(limit: 1);
    check($older->nextBefore !== null, 'a full page has a next one');
    $next = $api->sessions(limit: 1, before: $older->nextBefore);
    check($next->sessions[0]['id'] < $older->sessions[0]['id'], 'older sessions on the next page');
});

$t->test('presence of online and unknown users', function (Runner $t) use ($srv, $api) {
    $ida = new Listener($srv, 'ida');
    $t->defer(fn () => $ida->stop());
    $users = $api->presence(['ida', 'nobody']);
    same([['ida', 'online', 1], ['nobody', 'offline', 0, null]],
        [[$users[0]['user'], $users[0]['state'], $users[0]['connections']],
         [$users[1]['user'], $users[1]['state'], $users[1]['connections'], $users[1]['last_seen']]], 'presence');
    throws(InvalidArgumentException::class, fn () => $api->presence(['a,b']), 'a comma in a user id');
});

$t->test('API errors become typed exceptions with the status and the JSON code', function () use ($srv, $api) {
    $bad = new Client($srv->apiUrl(), 'wrong-key');
    $e = throws(UnauthorizedException::class, fn () => $bad->pushToUser('alice', 1), 'a wrong key');
    same([401, 'unauthorized'], [$e->getStatus(), $e->getErrorCode()], 'wrong key');
    check($e instanceof ApiException && $e instanceof WsproxyException && $e->getCode() === 401, 'the hierarchy');

    $e = throws(BadRequestException::class, fn () => $api->pushToUser('', 1), 'an empty user id');
    same([400, 'bad_request'], [$e->getStatus(), $e->getErrorCode()], 'bad body');
    check($e->getMessage() !== '', 'the API\'s message');
    $e = throws(BadRequestException::class, fn () => $api->sessions(state: 'sleeping'), 'a bad parameter');
    same(400, $e->getStatus(), 'bad parameter');
    $e = throws(PayloadTooLargeException::class, fn () => $api->pushToUser('alice', str_repeat('x', 70000)), 'a big body');
    same([413, 'too_large'], [$e->getStatus(), $e->getErrorCode()], 'too large');
    $e = throws(NotFoundException::class, fn () => $api->message(987654321), 'an unknown message');
    same('not_found', $e->getErrorCode(), 'unknown message');

    throws(InvalidArgumentException::class, fn () => $api->pushToUser('alice', NAN), 'a body JSON cannot hold');
    throws(InvalidArgumentException::class, fn () => $api->message(0), 'id 0');
    throws(InvalidArgumentException::class, fn () => new Client('127.0.0.1:8081', 'k'), 'a base URL without scheme');
});

$t->test('keep-alive: one connection for many calls', function () use ($srv) {
    $client = new Client($srv->apiUrl(), API_KEY);
    for ($i = 0; $i < 10; $i++) {
        $client->pushToUser('jay', $i);
        $client->presence(['jay']);
    }
    same(['requests' => 20, 'connects' => 1], $client->stats(), 'calls and connections');
});

$t->test('no server: ConnectionException', function () {
    $client = new Client('http://127.0.0.1:' . free_port(), API_KEY);
    $e = throws(ConnectionException::class, fn () => $client->presence(['a']), 'a refused connection');
    same(CURLE_COULDNT_CONNECT, $e->getCurlError(), 'curl error');
});

$t->test('a server that never answers: the total timeout', function () {
    /* a listening socket nobody accepts from: the kernel completes the handshake, nothing answers */
    $silent = stream_socket_server('tcp://127.0.0.1:0');
    $client = new Client('http://' . stream_socket_get_name($silent, false), API_KEY, connectTimeout: 1.0, timeout: 0.4);
    $started = microtime(true);
    $e = throws(TimeoutException::class, fn () => $client->pushToUser('a', 1, cid: 'c'), 'no answer');
    $took = microtime(true) - $started;
    check($took >= 0.35 && $took < 3, sprintf('gave up after the timeout (%.2fs)', $took));
    same(false, $e->isConnectTimeout(), 'the request had gone out');
    fclose($silent);
});

$t->test('a server that never accepts: the connect timeout', function () {
    /* backlog 0 and already full: the kernel drops further SYNs, so connect() never completes */
    $ctx = stream_context_create(['socket' => ['backlog' => 0]]);
    $full = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr, STREAM_SERVER_BIND | STREAM_SERVER_LISTEN, $ctx);
    $addr = stream_socket_get_name($full, false);
    $fillers = [];
    for ($i = 0; $i < 3; $i++) {
        $fillers[] = @stream_socket_client("tcp://$addr", $errno, $errstr, 0.2, STREAM_CLIENT_CONNECT | STREAM_CLIENT_ASYNC_CONNECT);
    }
    $client = new Client("http://$addr", API_KEY, connectTimeout: 0.3, timeout: 5.0);
    $started = microtime(true);
    $e = throws(TimeoutException::class, fn () => $client->presence(['a']), 'no connection');
    check(microtime(true) - $started < 2, 'gave up after the connect timeout');
    same(true, $e->isConnectTimeout(), 'never connected');
    fclose($full);
});

$t->test('a timeout on a reused keep-alive connection is not a connect timeout', function (Runner $t) {
    $stall = new Child(['node', __DIR__ . '/stall_after_first.mjs']);
    $t->defer(fn () => $stall->stop());
    $port = (int) $stall->readLine(microtime(true) + 5);
    $client = new Client("http://127.0.0.1:$port", API_KEY, connectTimeout: 1.0, timeout: 0.4);
    same([], $client->presence(['a']), 'the first call is answered');
    $e = throws(TimeoutException::class, fn () => $client->presence(['a']), 'the second is not');
    same(false, $e->isConnectTimeout(), 'the request had gone out on the kept connection');
    same(['requests' => 2, 'connects' => 1], $client->stats(), 'both on one connection');
});

exit($t->finish());
