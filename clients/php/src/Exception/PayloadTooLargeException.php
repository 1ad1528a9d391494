<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** HTTP 413 too_large: the request over [api] max_body, or a body over [limits] max_body. */
class PayloadTooLargeException extends ApiException
{
}
