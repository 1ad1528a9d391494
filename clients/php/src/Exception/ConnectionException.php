<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** The API could not be reached: refused, unresolvable, reset. Nothing was sent, or nothing arrived. */
class ConnectionException extends TransportException
{
}
