<?php

declare(strict_types=1);

namespace Wsproxy;

/** The answer to a direct or room push: the message is stored (the API answers after the commit). */
final class PushResult
{
    /**
     * @param int $id the message id (GET /api/v1/messages/ID: message())
     * @param int $live connections the message was sent to now; 0 = stored for the next connection
     * @param int $ts the server's time of acceptance, ms since the epoch
     * @param bool $duplicate the cid was pushed before: nothing new was stored or delivered
     */
    public function __construct(
        public readonly int $id,
        public readonly int $live,
        public readonly int $ts,
        public readonly bool $duplicate,
    ) {
    }
}
