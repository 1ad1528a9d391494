<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/**
 * No HTTP answer came back (curl failed). A push may or may not have been stored: retry it with the
 * same cid and the API answers with the first message's id instead of storing it twice.
 * getCurlError() is curl's error number (CURLE_*).
 */
class TransportException extends \RuntimeException implements WsproxyException
{
    public function __construct(string $message, private readonly int $curlError)
    {
        parent::__construct($message, $curlError);
    }

    public function getCurlError(): int
    {
        return $this->curlError;
    }
}
