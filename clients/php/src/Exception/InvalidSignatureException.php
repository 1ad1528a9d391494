<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/**
 * Webhook::verify() refused a request: a signature or timestamp header missing or malformed, a
 * signature that does not match, a timestamp outside the tolerance, or a signed body that is not a
 * JSON object or list. Answer such a request with 400 (or 401) and do not act on it.
 */
class InvalidSignatureException extends \RuntimeException implements WsproxyException
{
}
