<?php

declare(strict_types=1);

namespace Wsproxy;

use Wsproxy\Exception\InvalidArgumentException;
use Wsproxy\Exception\InvalidSignatureException;

/**
 * Verification of the webhooks wsproxy sends to the backend. Each request carries
 * X-Wsproxy-Timestamp (milliseconds since the epoch, docs/events.md) and X-Wsproxy-Signature, the lowercase hex HMAC-SHA256 of
 * "TIMESTAMP.BODY" keyed with the shared secret. The timestamp is signed, so a captured request
 * cannot be replayed once it is older than the tolerance.
 */
final class Webhook
{
    public const TIMESTAMP_HEADER = 'X-Wsproxy-Timestamp';
    public const SIGNATURE_HEADER = 'X-Wsproxy-Signature';

    /**
     * Checks a webhook request and returns its decoded JSON body (the batch of events).
     *
     * @param string $body the raw request body, byte for byte (file_get_contents('php://input'))
     * @param array<mixed> $headers the request headers, any of: ['X-Wsproxy-Signature' => '...'] with
     *        names in any case, values as strings or lists of strings (PSR-7 getHeaders()); raw lines
     *        ['X-Wsproxy-Signature: ...']; or FastCGI/CGI $_SERVER (HTTP_X_WSPROXY_SIGNATURE)
     * @param string $secret the shared webhook secret
     * @param int $toleranceSeconds how far the timestamp may be from this host's clock, either way
     * @return array<mixed> the decoded body
     * @throws InvalidSignatureException the request is not a valid, fresh wsproxy webhook
     */
    public static function verify(string $body, array $headers, string $secret, int $toleranceSeconds = 300): array
    {
        if ($secret === '') {
            throw new InvalidArgumentException('the webhook secret must not be empty');
        }
        if ($toleranceSeconds < 0) {
            throw new InvalidArgumentException('toleranceSeconds must not be negative');
        }
        $timestamp = self::header($headers, self::TIMESTAMP_HEADER);
        $signature = self::header($headers, self::SIGNATURE_HEADER);
        if ($timestamp === null || $signature === null) {
            throw new InvalidSignatureException('the ' . ($timestamp === null ? self::TIMESTAMP_HEADER : self::SIGNATURE_HEADER)
                . ' header is missing (or repeated with different values)');
        }
        if (!preg_match('/^[0-9]{1,15}$/', $timestamp)) {
            throw new InvalidSignatureException('the ' . self::TIMESTAMP_HEADER . ' header is not milliseconds since the epoch');
        }
        $expected = hash_hmac('sha256', $timestamp . '.' . $body, $secret);
        if (!hash_equals($expected, strtolower($signature))) {
            throw new InvalidSignatureException('the signature does not match');
        }
        /* checked after the signature, so an unsigned request learns nothing about the clock */
        $ageMs = (int) floor(microtime(true) * 1000) - (int) $timestamp;
        if (abs($ageMs) > $toleranceSeconds * 1000) {
            throw new InvalidSignatureException(sprintf('the timestamp is %.1f s %s, over the tolerance of %d s',
                abs($ageMs) / 1000, $ageMs > 0 ? 'old' : 'in the future', $toleranceSeconds));
        }
        $decoded = json_decode($body, true, 512, JSON_BIGINT_AS_STRING);
        if (!is_array($decoded)) {
            throw new InvalidSignatureException('the signed body is not a JSON object or list');
        }
        return $decoded;
    }

    /**
     * One header's value, trimmed; null when it is absent or given more than once with different values.
     *
     * @param array<mixed> $headers
     */
    private static function header(array $headers, string $name): ?string
    {
        $want = strtolower($name);
        $cgi = 'http_' . str_replace('-', '_', $want);
        $found = [];
        foreach ($headers as $key => $value) {
            if (is_int($key)) {
                /* a raw "Name: value" line */
                if (!is_string($value) || !str_contains($value, ':')) {
                    continue;
                }
                [$key, $value] = explode(':', $value, 2);
            }
            $key = strtolower(trim((string) $key));
            if ($key !== $want && $key !== $cgi) {
                continue;
            }
            foreach (is_array($value) ? $value : [$value] as $v) {
                if (is_string($v) || is_int($v)) {
                    $found[] = trim((string) $v);
                }
            }
        }
        $found = array_unique($found);
        return count($found) === 1 ? $found[0] : null;
    }
}
