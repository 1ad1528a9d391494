<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/**
 * The connect timeout or the total timeout ran out. isConnectTimeout() tells which: after a connect
 * timeout the request was never sent; after the other, a push may have been stored.
 */
class TimeoutException extends TransportException
{
    public function __construct(string $message, int $curlError, private readonly bool $connectTimeout)
    {
        parent::__construct($message, $curlError);
    }

    public function isConnectTimeout(): bool
    {
        return $this->connectTimeout;
    }
}
