<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** A call the library refuses before sending it: a body that is not JSON, an id below 1, ... */
class InvalidArgumentException extends \InvalidArgumentException implements WsproxyException
{
}
