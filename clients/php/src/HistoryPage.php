<?php

declare(strict_types=1);

namespace Wsproxy;

/** One page of history, newest first. Pass nextBefore as $before for the next, older page. */
final class HistoryPage
{
    /**
     * @param list<array<string, mixed>> $items messages: id, from, to or room, body, ts, cid
     * @param bool $more older messages exist
     * @param int|null $nextBefore the id to page on from; null when this is the last page
     */
    public function __construct(
        public readonly array $items,
        public readonly bool $more,
        public readonly ?int $nextBefore,
    ) {
    }
}
