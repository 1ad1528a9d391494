<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** HTTP 400 bad_request or bad_json: a field or parameter the API does not accept. */
class BadRequestException extends ApiException
{
}
