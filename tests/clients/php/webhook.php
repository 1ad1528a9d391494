<?php

/*
 * webhook.php -- unit tests of Wsproxy\Webhook::verify(), no server needed: the vectors are computed
 * here from the documented scheme (hex HMAC-SHA256 of "TIMESTAMP.BODY", the timestamp in milliseconds).
 * webhook_e2e.php checks it against webhooks the real server sent. Included by run.php.
 */

declare(strict_types=1);

use Wsproxy\Exception\InvalidArgumentException;
use Wsproxy\Exception\InvalidSignatureException;
use Wsproxy\Exception\WsproxyException;
use Wsproxy\Webhook;

function webhook_tests(Runner $t): void
{
    $secret = 'whsec-test-0123456789';
    $body = '{"time_ms":1767225600123,"events":[{"id":41,"type":"user.online","user":"alice","time_ms":1767225600001,'
        . '"attempt":1,"data":{"user":"alice"}}]}';
    $nowMs = fn () => (int) floor(microtime(true) * 1000);
    $sign = fn (string $ts, ?string $b = null, ?string $key = null) => hash_hmac('sha256', $ts . '.' . ($b ?? $body), $key ?? $secret);

    $t->test('webhook: a known vector, and the headers in every form', function () use ($secret, $body, $sign, $nowMs) {
        /* a fixed vector (computed with Python's hmac), so a change of the scheme on either side shows;
         * its timestamp is long past, hence the wide tolerance */
        same(['events' => []], Webhook::verify('{"events":[]}', ['X-Wsproxy-Timestamp' => '1767225600000',
            'X-Wsproxy-Signature' => '2a99ab474d9794682ab8c106c167218cba909f709f21aceef0d0397184c8ea62'], $secret, 2_000_000_000),
            'the fixed vector');
        $ts = (string) $nowMs();
        $sig = $sign($ts);
        $want = json_decode($body, true);
        $forms = [
            'HTTP names' => ['X-Wsproxy-Timestamp' => $ts, 'X-Wsproxy-Signature' => $sig, 'Content-Type' => 'application/json'],
            'lower case' => ['x-wsproxy-timestamp' => $ts, 'x-wsproxy-signature' => $sig],
            'odd case, PSR-7 lists' => ['X-WSPROXY-Timestamp' => [$ts], 'x-Wsproxy-signature' => [$sig]],
            'raw lines' => ["X-Wsproxy-Timestamp: $ts", "X-Wsproxy-Signature:  $sig"],
            'FastCGI $_SERVER' => ['HTTP_X_WSPROXY_TIMESTAMP' => $ts, 'HTTP_X_WSPROXY_SIGNATURE' => $sig,
                'REQUEST_METHOD' => 'POST', 'CONTENT_TYPE' => 'application/json'],
            'upper-case hex' => ['X-Wsproxy-Timestamp' => $ts, 'X-Wsproxy-Signature' => strtoupper($sig)],
        ];
        foreach ($forms as $what => $headers) {
            same($want, Webhook::verify($body, $headers, $secret), $what);
        }
    });

    $t->test('webhook: wrong, missing, stale and malformed are refused', function () use ($secret, $body, $sign, $nowMs) {
        $now = $nowMs();
        $ts = (string) $now;
        $h = fn (string $ts, string $sig) => ['X-Wsproxy-Timestamp' => $ts, 'X-Wsproxy-Signature' => $sig];
        $refused = function (string $what, string $b, array $headers, int $tolerance = 300, ?string $key = null) use ($secret) {
            $e = throws(InvalidSignatureException::class, fn () => Webhook::verify($b, $headers, $key ?? $secret, $tolerance), $what);
            check($e instanceof WsproxyException, "$what: a WsproxyException");
            return $e->getMessage();
        };
        $refused('another secret', $body, $h($ts, $sign($ts)), key: 'other-secret');
        $refused('a changed body', $body . ' ', $h($ts, $sign($ts)));
        $refused('a signature for another time', $body, $h((string) ($now + 1), $sign($ts)));
        $refused('the signature of the body alone', $body, $h($ts, hash_hmac('sha256', $body, $secret)));
        $refused('a truncated signature', $body, $h($ts, substr($sign($ts), 0, 32)));
        $refused('a binary signature', $body, $h($ts, hash_hmac('sha256', "$ts.$body", $secret, true)));
        $refused('no signature', $body, ['X-Wsproxy-Timestamp' => $ts]);
        $refused('no timestamp', $body, ['X-Wsproxy-Signature' => $sign($ts)]);
        $refused('no headers', $body, []);
        $refused('two different signatures', $body, ["X-Wsproxy-Timestamp: $ts", 'X-Wsproxy-Signature: ' . $sign($ts),
            'X-Wsproxy-Signature: ' . str_repeat('0', 64)]);
        foreach (['', ' ', '-5', '1.5', '1e12', '0x10', '1234567890123456'] as $bad) {
            $refused("timestamp '$bad'", $body, $h($bad, $sign($bad)));
        }
        $secs = (string) intdiv($now, 1000);
        check(str_contains($refused('a timestamp in seconds', $body, $h($secs, $sign($secs))), 'old'), 'seconds read as ms: long past');
        $old = (string) ($now - 301_000);
        check(str_contains($refused('301 s old', $body, $h($old, $sign($old))), 'old'), 'says it is old');
        $future = (string) ($now + 301_000);
        check(str_contains($refused('301 s ahead', $body, $h($future, $sign($future))), 'future'), 'says it is ahead');
        $recent = (string) ($now - 250_000);
        same(json_decode($body, true), Webhook::verify($body, $h($recent, $sign($recent)), $secret), '250 s old is fine');
        $refused('250 s old with a 60 s tolerance', $body, $h($recent, $sign($recent)), 60);
        $refused('a signed body that is not JSON', 'hello', $h($ts, $sign($ts, 'hello')));
        throws(InvalidArgumentException::class, fn () => Webhook::verify($body, $h($ts, $sign($ts, null, '')), ''), 'an empty secret');
        throws(InvalidArgumentException::class, fn () => Webhook::verify($body, $h($ts, $sign($ts)), $secret, -1), 'a negative tolerance');
    });
}
