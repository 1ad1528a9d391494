<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** HTTP 401 unauthorized: no API key, or not one of [api] keys. */
class UnauthorizedException extends ApiException
{
}
