<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** Everything this library throws implements this: `catch (WsproxyException $e)` gets them all. */
interface WsproxyException extends \Throwable
{
}
