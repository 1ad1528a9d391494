<?php

declare(strict_types=1);

namespace Wsproxy;

/**
 * One page of a user's conversations, newest last message first. Pass nextBefore as $before for the
 * next page.
 */
final class ConversationPage
{
    /**
     * @param list<array<string, mixed>> $items each {room or with, last: {id, from, ts, preview or
     *        deleted [, via]}, unread}
     * @param bool $more more conversations exist
     * @param int|null $nextBefore the id to page on from; null when this is the last page
     */
    public function __construct(
        public readonly array $items,
        public readonly bool $more,
        public readonly ?int $nextBefore,
    ) {
    }
}
