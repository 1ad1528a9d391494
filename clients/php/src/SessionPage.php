<?php

declare(strict_types=1);

namespace Wsproxy;

/** One page of sessions, newest first. Pass nextBefore as $before for the next page. */
final class SessionPage
{
    /**
     * @param list<array<string, mixed>> $sessions id, user, state, remote_addr, user_agent, connected_at,
     *        last_seen_at, ended_at, end_reason (docs/api.md)
     * @param int|null $nextBefore null when this page was the last
     */
    public function __construct(
        public readonly array $sessions,
        public readonly ?int $nextBefore,
    ) {
    }
}
