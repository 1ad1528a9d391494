<?php

declare(strict_types=1);

namespace Wsproxy;

/** One page of rooms in name order. Pass nextAfter as $after for the next page. */
final class RoomPage
{
    /**
     * @param list<array{name: string, open: bool, members: int, live: int, created_at: int, last_id: int|null}> $rooms
     * @param string|null $nextAfter the name to page on from; null when this is the last page
     */
    public function __construct(
        public readonly array $rooms,
        public readonly ?string $nextAfter,
    ) {
    }
}
