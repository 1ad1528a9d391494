<?php

declare(strict_types=1);

namespace Wsproxy;

/**
 * The answer for one stored push (direct, room, an entry of a "to" list or of a batch): the message is
 * stored (the API answers after the commit).
 */
final class PushResult
{
    /**
     * @param int $id the message id (GET /api/v1/messages/ID: message())
     * @param int $live connections the message was sent to now; 0 = stored for the next connection
     * @param int $ts the server's time of acceptance, ms since the epoch
     * @param bool $duplicate the cid was pushed before: nothing new was stored or delivered
     * @param int|null $members a room push: the room's members (0: nobody will get it, a typo?); null otherwise
     * @param string|null $to the recipient of a direct push
     * @param string|null $room the room of a room push
     * @param string|null $cid the cid stored with the message (for a "to" list: "CID/USER")
     */
    public function __construct(
        public readonly int $id,
        public readonly int $live,
        public readonly int $ts,
        public readonly bool $duplicate,
        public readonly ?int $members = null,
        public readonly ?string $to = null,
        public readonly ?string $room = null,
        public readonly ?string $cid = null,
    ) {
    }
}
