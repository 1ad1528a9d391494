<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/**
 * The API answered with an error. getStatus() is the HTTP status (also getCode()), getErrorCode() the
 * API's JSON error code ("bad_request", "not_live", ... see docs/api.md), null when the answer was
 * not the API's JSON (a proxy in between answered, say). The subclasses name the usual statuses.
 */
class ApiException extends \RuntimeException implements WsproxyException
{
    public function __construct(string $message, private readonly int $status, private readonly ?string $errorCode)
    {
        parent::__construct($message, $status);
    }

    public function getStatus(): int
    {
        return $this->status;
    }

    public function getErrorCode(): ?string
    {
        return $this->errorCode;
    }
}
