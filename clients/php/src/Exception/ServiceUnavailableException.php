<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** HTTP 503 store_unavailable: nothing was stored; retry (a push with the same cid). */
class ServiceUnavailableException extends ApiException
{
}
