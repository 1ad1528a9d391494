<?php

declare(strict_types=1);

namespace Wsproxy;

use Wsproxy\Exception\ApiException;
use Wsproxy\Exception\BadRequestException;
use Wsproxy\Exception\ConnectionException;
use Wsproxy\Exception\InvalidArgumentException;
use Wsproxy\Exception\NotFoundException;
use Wsproxy\Exception\PayloadTooLargeException;
use Wsproxy\Exception\ServiceUnavailableException;
use Wsproxy\Exception\TimeoutException;
use Wsproxy\Exception\TransportException;
use Wsproxy\Exception\UnauthorizedException;
use Wsproxy\Exception\UnexpectedResponseException;

/**
 * Client of the wsproxy HTTP API (docs/api.md) for an app backend. One curl handle is reused for every
 * call, so calls after the first go over the same keep-alive connection (curl reconnects by itself
 * when the server has closed an idle one). Every call throws a WsproxyException on failure: an
 * ApiException subclass when the API answered an error, a TransportException when it did not answer.
 */
final class Client
{
    /** The API version spoken: the v1 in /api/v1/. */
    public const API_VERSION = '1';

    private const PREFIX = '/api/v1';
    private const JSON_OUT = JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
        | JSON_PRESERVE_ZERO_FRACTION;

    private \CurlHandle $curl;
    private string $baseUrl;
    private int $requests = 0;
    private int $connects = 0;

    /**
     * @param string $baseUrl the API listener, e.g. 'http://127.0.0.1:8081' ([api] listen)
     * @param string $apiKey one of [api] keys
     * @param float $connectTimeout seconds to open the TCP connection
     * @param float $timeout seconds for a whole call, connect included
     */
    public function __construct(
        string $baseUrl,
        private readonly string $apiKey,
        private readonly float $connectTimeout = 2.0,
        private readonly float $timeout = 10.0,
    ) {
        if (!preg_match('~^https?://[^/?#]+/?$~i', $baseUrl)) {
            throw new InvalidArgumentException("baseUrl must be http(s)://host:port, got '$baseUrl'");
        }
        if ($connectTimeout <= 0 || $timeout <= 0) {
            throw new InvalidArgumentException('timeouts must be positive');
        }
        $this->baseUrl = rtrim($baseUrl, '/');
        $this->curl = curl_init();
    }

    /* ---------- push ---------- */

    /**
     * Pushes a message to every connection of one user, stored until one of them acks it.
     * $cid makes the push idempotent: a retry with the same $from and $cid stores nothing new and gets
     * the first message's id with duplicate = true. It is unique per sender across all recipients.
     */
    public function pushToUser(string $user, mixed $body, ?string $cid = null, ?string $from = null): PushResult
    {
        return $this->push(['to' => $user], $body, $cid, $from);
    }

    /**
     * Pushes the same body to several users in one request (the API's "to" list, at most [api]
     * max_recipients, 100 by default): one stored message per user, each with its own id. The request
     * is atomic: an invalid user id (BadRequestException) or a store failure (ServiceUnavailableException)
     * stores nothing for anyone. With a $cid the server gives each user's message the cid "$cid/$user",
     * so a retry of the whole call answers every user with duplicate = true. Repeated users are sent
     * once; an empty list sends nothing. Returns the results by user, in the order given (PHP turns a
     * numeric id such as "10" into an int key: PushResult::$to has the id as a string).
     *
     * @param list<string> $users
     * @return array<string, PushResult>
     */
    public function pushToUsers(array $users, mixed $body, ?string $cid = null, ?string $from = null): array
    {
        foreach ($users as $user) {
            if (!is_string($user)) {
                throw new InvalidArgumentException('pushToUsers takes a list of user ids (strings)');
            }
        }
        $users = array_values(array_unique($users, SORT_STRING));
        if (!$users) {
            return [];
        }
        $answer = $this->request('POST', '/push', [], self::pushBody(['to' => $users], self::encode($body), $cid, $from));
        $results = [];
        foreach (self::results($answer) as $result) {
            $results[(string) $result->to] = $result;
        }
        return $results;
    }

    /**
     * Several pushes in one request (POST /api/v1/push/batch, at most [api] max_recipients), each a
     * direct or room push: ['to' => USER or 'room' => ROOM, 'body' => ANY, 'from' => ?, 'cid' => ?].
     * Atomic: one invalid push (BadRequestException, its index in the message) or a store failure
     * (ServiceUnavailableException) stores nothing of the batch. Returns one PushResult per push, in
     * order, with to or room and cid filled in. No broadcast in a batch.
     *
     * @param list<array{to?: string, room?: string, body: mixed, from?: string, cid?: string}> $pushes
     * @return list<PushResult>
     */
    public function pushBatch(array $pushes): array
    {
        if (!$pushes) {
            throw new InvalidArgumentException('pushBatch takes 1 or more pushes');
        }
        $items = [];
        foreach (array_values($pushes) as $i => $push) {
            if (!is_array($push) || !array_key_exists('body', $push)) {
                throw new InvalidArgumentException("push $i must be an array with a body");
            }
            $items[] = (object) $push;   /* an object even when the array is a list: the API names the error */
        }
        $answer = $this->request('POST', '/push/batch', [], self::encode(['pushes' => $items]));
        return self::results($answer);
    }

    /** Pushes a message to a room: stored, sent to every live member, replayed to the others. */
    public function pushToRoom(string $room, mixed $body, ?string $cid = null, ?string $from = null): PushResult
    {
        return $this->push(['room' => $room], $body, $cid, $from);
    }

    /**
     * Sends an announcement to every live connection. Not stored, not replayed, no idempotency (a
     * $cid is only passed along to clients). Returns the number of connections reached.
     */
    public function broadcast(mixed $body, ?string $cid = null, ?string $from = null): int
    {
        $answer = $this->request('POST', '/push', [], self::pushBody(['broadcast' => true], self::encode($body), $cid, $from));
        return (int) $answer['live'];
    }

    /* ---------- rooms, conversations, deletion ---------- */

    /**
     * Makes $user a member of $room (created if needed): the way into a closed room. Live connections
     * of the user get "joined" with reason "added" and receive the room at once. Returns false when
     * the user was a member already (the membership is the backend's from now on).
     */
    public function addMember(string $room, string $user): bool
    {
        $answer = $this->request('POST', '/rooms/' . self::segment($room, 'room') . '/members', [],
            self::encode(['user' => $user]));
        return ($answer['added'] ?? null) === true;
    }

    /**
     * Removes $user from $room: the user's connections get "left" with reason "removed" and stop
     * receiving at once. NotFoundException when the user is not a member.
     */
    public function removeMember(string $room, string $user): void
    {
        $this->request('DELETE', '/rooms/' . self::segment($room, 'room') . '/members/' . self::segment($user, 'user'));
    }

    /**
     * One page of rooms in name order, each {name, open, members, live, created_at, last_id}.
     *
     * @param string|null $after the name to page on from (RoomPage::$nextAfter)
     * @param int|null $limit 1 to 1000, default 100
     */
    public function rooms(?string $after = null, ?int $limit = null): RoomPage
    {
        $answer = $this->request('GET', '/rooms', ['after' => $after, 'limit' => $limit]);
        return new RoomPage($answer['rooms'], $answer['next_after']);
    }

    /**
     * A room's members with their presence (an unknown room has none).
     *
     * @return list<array{user: string, state: string, connections: int, last_seen: int|null}>
     */
    public function members(string $room): array
    {
        return $this->request('GET', '/rooms/' . self::segment($room, 'room') . '/members')['members'];
    }

    /**
     * Deletes a room: every member leaves (reason "deleted"), its messages become tombstones, the
     * name is free again. NotFoundException when there is no such room.
     */
    public function deleteRoom(string $room): void
    {
        $this->request('DELETE', '/rooms/' . self::segment($room, 'room'));
    }

    /**
     * A user's conversations (rooms with a message, and direct peers), newest last message first:
     * each {room or with, last: {id, from, ts, preview or deleted [, via]}, unread}.
     *
     * @param int|null $before ConversationPage::$nextBefore of the previous page
     * @param int|null $limit 1 to 100, default 50
     */
    public function conversations(string $user, ?int $before = null, ?int $limit = null): ConversationPage
    {
        $answer = $this->request('GET', '/users/' . self::segment($user, 'user') . '/conversations',
            ['before' => $before, 'limit' => $limit]);
        return new ConversationPage($answer['items'], $answer['more'] === true,
            isset($answer['next_before']) ? (int) $answer['next_before'] : null);
    }

    /**
     * Deletes a message: it leaves history, replay and pending delivery, live connections that may
     * show it get {"type":"deleted","id":ID}. NotFoundException when there is none (or it is deleted).
     */
    public function deleteMessage(int $id): void
    {
        $this->request('DELETE', '/messages/' . self::positive($id, 'message id'));
    }

    /* ---------- sessions ---------- */

    /**
     * One page of sessions, newest first.
     *
     * @param string|null $state 'active', 'ended' or 'any' (the default)
     * @param int|null $limit 1 to 1000, default 50
     */
    public function sessions(?string $user = null, ?string $state = null, ?int $limit = null, ?int $before = null): SessionPage
    {
        $answer = $this->request('GET', '/sessions', ['user' => $user, 'state' => $state, 'limit' => $limit, 'before' => $before]);
        return new SessionPage($answer['sessions'], $answer['next_before']);
    }

    /** @return array<string, mixed> one session (NotFoundException when there is none) */
    public function session(int $id): array
    {
        return $this->request('GET', '/sessions/' . self::positive($id, 'session id'));
    }

    /**
     * Closes a session's live connection (1008 "kicked"). A kick is not a ban: the user may
     * reconnect. NotFoundException with getErrorCode() 'not_live' when it had already ended.
     */
    public function kick(int $id): void
    {
        $this->request('DELETE', '/sessions/' . self::positive($id, 'session id'));
    }

    /* ---------- presence, history, receipts ---------- */

    /**
     * The state of up to 100 users, in the order asked.
     *
     * @param list<string> $users
     * @return list<array{user: string, state: string, connections: int, last_seen: int|null}>
     */
    public function presence(array $users): array
    {
        if (!$users || count($users) > 100) {
            throw new InvalidArgumentException('presence takes 1 to 100 users');
        }
        foreach ($users as $user) {
            if (!is_string($user) || str_contains($user, ',')) {
                /* the API splits users=a,b on commas after decoding: such a name cannot be asked for */
                throw new InvalidArgumentException('a user id with a comma cannot be looked up');
            }
        }
        return $this->request('GET', '/presence', ['users' => implode(',', $users)])['users'];
    }

    /** The direct conversation between $user and $with, both directions, newest first. */
    public function conversation(string $user, string $with, ?int $before = null, ?int $limit = null): HistoryPage
    {
        return $this->history(['with' => $with, 'user' => $user, 'before' => $before, 'limit' => $limit]);
    }

    /** A room's messages, newest first (the API reads any room: it is an admin interface). */
    public function roomHistory(string $room, ?int $before = null, ?int $limit = null): HistoryPage
    {
        return $this->history(['room' => $room, 'before' => $before, 'limit' => $limit]);
    }

    /**
     * A message with its delivery state: for a direct message 'stored' until a connection of the
     * recipient acks it, then 'delivered' with delivered_at and delivered_by (a session id).
     *
     * @return array<string, mixed>
     */
    public function message(int $id): array
    {
        return $this->request('GET', '/messages/' . self::positive($id, 'message id'));
    }

    /**
     * Calls made and TCP connections opened by this client: with keep-alive working, connects stays
     * far below requests.
     *
     * @return array{requests: int, connects: int}
     */
    public function stats(): array
    {
        return ['requests' => $this->requests, 'connects' => $this->connects];
    }

    /* ---------- internals ---------- */

    /** @param array<string, mixed> $target */
    private function push(array $target, mixed $body, ?string $cid, ?string $from): PushResult
    {
        $a = $this->request('POST', '/push', [], self::pushBody($target, self::encode($body), $cid, $from));
        return new PushResult((int) $a['id'], (int) $a['live'], (int) $a['ts'], ($a['duplicate'] ?? false) === true,
            isset($a['members']) ? (int) $a['members'] : null, $target['to'] ?? null, $target['room'] ?? null, $cid);
    }

    /**
     * The "results" of a "to" list or a batch.
     *
     * @param array<string, mixed> $answer
     * @return list<PushResult>
     */
    private static function results(array $answer): array
    {
        if (!is_array($answer['results'] ?? null)) {
            throw new UnexpectedResponseException('a push answer without results', 202, null);
        }
        $out = [];
        foreach ($answer['results'] as $r) {
            $out[] = new PushResult((int) $r['id'], (int) $r['live'], (int) $r['ts'], ($r['duplicate'] ?? false) === true,
                null, $r['to'] ?? null, $r['room'] ?? null, $r['cid'] ?? null);
        }
        return $out;
    }

    /**
     * The body is encoded once and spliced in as it is.
     *
     * @param array<string, mixed> $target
     */
    private static function pushBody(array $target, string $body, ?string $cid, ?string $from): string
    {
        $fields = $target;
        if ($cid !== null) {
            $fields['cid'] = $cid;
        }
        if ($from !== null) {
            $fields['from'] = $from;
        }
        return substr(json_encode($fields, self::JSON_OUT), 0, -1) . ',"body":' . $body . '}';
    }

    private static function encode(mixed $body): string
    {
        try {
            return json_encode($body, self::JSON_OUT);
        } catch (\JsonException $e) {
            throw new InvalidArgumentException('body cannot be encoded as JSON: ' . $e->getMessage(), 0, $e);
        }
    }

    /** A name as one %-encoded path segment (the API decodes it). */
    private static function segment(string $name, string $what): string
    {
        if ($name === '') {
            throw new InvalidArgumentException("the $what name must not be empty");
        }
        return rawurlencode($name);
    }

    private static function positive(int $id, string $what): int
    {
        if ($id < 1) {
            throw new InvalidArgumentException("$what must be a positive integer, got $id");
        }
        return $id;
    }

    /** @param array<string, mixed> $query */
    private function history(array $query): HistoryPage
    {
        $a = $this->request('GET', '/history', $query);
        $items = $a['items'];
        $more = $a['more'] === true;
        return new HistoryPage($items, $more, $more && $items ? (int) $items[array_key_last($items)]['id'] : null);
    }

    /**
     * One call. curl_reset() keeps the handle's open connection, so each call starts from clean
     * options without giving up keep-alive.
     *
     * @param array<string, mixed> $query null values are left out
     * @return mixed the decoded JSON answer, null for 204
     */
    private function request(string $method, string $path, array $query = [], ?string $json = null): mixed
    {
        $url = $this->baseUrl . self::PREFIX . $path;
        $query = array_filter($query, static fn ($v) => $v !== null);
        if ($query) {
            $url .= '?' . http_build_query($query, '', '&', PHP_QUERY_RFC3986);
        }
        $headers = ['Authorization: Bearer ' . $this->apiKey, 'Accept: application/json', 'Expect:'];
        if ($json !== null) {
            $headers[] = 'Content-Type: application/json';
        }
        curl_reset($this->curl);
        curl_setopt_array($this->curl, [
            CURLOPT_URL => $url,
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_PATH_AS_IS => true,   /* a room named '..' stays a name */
            CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
            CURLOPT_CONNECTTIMEOUT_MS => (int) ceil($this->connectTimeout * 1000),
            CURLOPT_TIMEOUT_MS => (int) ceil($this->timeout * 1000),
            CURLOPT_NOSIGNAL => true,   /* sub-second timeouts without SIGALRM */
            CURLOPT_TCP_NODELAY => true,
            CURLOPT_USERAGENT => 'wsproxy-php/' . self::API_VERSION,
        ]);
        if ($json !== null) {
            curl_setopt($this->curl, CURLOPT_POSTFIELDS, $json);
        }
        $body = curl_exec($this->curl);
        $this->requests++;
        $this->connects += (int) curl_getinfo($this->curl, CURLINFO_NUM_CONNECTS);
        if ($body === false) {
            throw $this->transportError($method, $url);
        }
        $status = (int) curl_getinfo($this->curl, CURLINFO_RESPONSE_CODE);
        if ($status < 200 || $status > 299) {
            throw self::apiError($status, $body);
        }
        if ($status === 204) {
            return null;
        }
        $decoded = json_decode($body, true);
        if (!is_array($decoded)) {
            throw new UnexpectedResponseException("HTTP $status with a body that is not a JSON object: " . self::excerpt($body), $status, null);
        }
        return $decoded;
    }

    private function transportError(string $method, string $url): TransportException
    {
        $errno = curl_errno($this->curl);
        $message = "$method $url: " . curl_error($this->curl);
        if ($errno === CURLE_OPERATION_TIMEDOUT) {
            /* No pre-transfer time: the timeout struck before a connection was ready for the request.
             * (The connect time cannot tell: it is 0 on a reused keep-alive connection too.) */
            $sent = curl_getinfo($this->curl, CURLINFO_PRETRANSFER_TIME_T) > 0;
            return new TimeoutException($message, $errno, !$sent);
        }
        if (in_array($errno, [CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY,
            CURLE_GOT_NOTHING, CURLE_SEND_ERROR, CURLE_RECV_ERROR], true)) {
            return new ConnectionException($message, $errno);
        }
        return new TransportException($message, $errno);
    }

    private static function apiError(int $status, string $body): ApiException
    {
        $decoded = json_decode($body, true);
        $error = is_array($decoded) && is_array($decoded['error'] ?? null) ? $decoded['error'] : null;
        $code = is_string($error['code'] ?? null) ? $error['code'] : null;
        $message = is_string($error['message'] ?? null) ? $error['message'] : "HTTP $status: " . self::excerpt($body);
        $class = match ($status) {
            400 => BadRequestException::class,
            401 => UnauthorizedException::class,
            404 => NotFoundException::class,
            413 => PayloadTooLargeException::class,
            503 => ServiceUnavailableException::class,
            default => ApiException::class,
        };
        return new $class($message, $status, $code);
    }

    private static function excerpt(string $body): string
    {
        $text = trim(substr($body, 0, 200));
        return $text === '' ? '(empty)' : $text;
    }
}
