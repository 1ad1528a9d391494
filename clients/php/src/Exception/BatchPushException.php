<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

use Wsproxy\PushResult;

/**
 * pushToUsers() could not push to every user. getResults() has the pushes that were stored,
 * getErrors() the API errors by user, getNotAttempted() the users skipped after the API became
 * unreachable. Calling pushToUsers() again with the same cid is safe: the stored ones come back as
 * duplicates, the others are pushed.
 */
class BatchPushException extends \RuntimeException implements WsproxyException
{
    /**
     * @param array<string, PushResult> $results
     * @param array<string, WsproxyException> $errors
     * @param list<string> $notAttempted
     */
    public function __construct(
        private readonly array $results,
        private readonly array $errors,
        private readonly array $notAttempted,
    ) {
        $first = reset($errors);
        parent::__construct(sprintf(
            'push failed for %d of %d users (first: %s: %s)',
            count($errors) + count($notAttempted),
            count($results) + count($errors) + count($notAttempted),
            (string) key($errors),
            $first instanceof \Throwable ? $first->getMessage() : '',
        ), 0, $first instanceof \Throwable ? $first : null);
    }

    /** @return array<string, PushResult> */
    public function getResults(): array
    {
        return $this->results;
    }

    /** @return array<string, WsproxyException> */
    public function getErrors(): array
    {
        return $this->errors;
    }

    /** @return list<string> */
    public function getNotAttempted(): array
    {
        return $this->notAttempted;
    }
}
