<?php

declare(strict_types=1);

namespace Wsproxy;

use Wsproxy\Exception\ApiException;
use Wsproxy\Exception\BadRequestException;
use Wsproxy\Exception\BatchPushException;
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
    private const CID_MAX_BYTES = 128;
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
     * Pushes the same body to several users, one push each over the same connection (the API has no
     * batch call). With a $cid each user's push gets its own cid derived from it ("$cid/$user", or a
     * hash of both when that is over 128 bytes), so a retry of the whole call is idempotent too.
     * Returns the results by user. When some fail: BatchPushException with what was done. API errors
     * are per user and the others still go; once the API is unreachable the rest are not tried.
     *
     * @param list<string> $users
     * @return array<string, PushResult>
     */
    public function pushToUsers(array $users, mixed $body, ?string $cid = null, ?string $from = null): array
    {
        $encoded = self::encode($body);
        $users = array_values(array_unique($users));
        $results = [];
        $errors = [];
        foreach ($users as $i => $user) {
            try {
                $results[$user] = $this->pushEncoded(['to' => $user], $encoded, self::userCid($cid, $user), $from);
            } catch (ApiException $e) {
                $errors[$user] = $e;
            } catch (TransportException $e) {
                $errors[$user] = $e;
                throw new BatchPushException($results, $errors, array_slice($users, $i + 1));
            }
        }
        if ($errors) {
            throw new BatchPushException($results, $errors, []);
        }
        return $results;
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
        return $this->pushEncoded($target, self::encode($body), $cid, $from);
    }

    /** @param array<string, mixed> $target */
    private function pushEncoded(array $target, string $body, ?string $cid, ?string $from): PushResult
    {
        $a = $this->request('POST', '/push', [], self::pushBody($target, $body, $cid, $from));
        return new PushResult((int) $a['id'], (int) $a['live'], (int) $a['ts'], ($a['duplicate'] ?? false) === true);
    }

    /**
     * The body is encoded once and spliced in, so pushToUsers does not re-encode it per user.
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

    private static function userCid(?string $cid, string $user): ?string
    {
        if ($cid === null) {
            return null;
        }
        $derived = $cid . '/' . $user;
        return strlen($derived) <= self::CID_MAX_BYTES ? $derived : 'sha256:' . hash('sha256', $cid . "\0" . $user);
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
