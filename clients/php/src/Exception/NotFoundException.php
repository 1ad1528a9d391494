<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** HTTP 404 not_found (no such session, message or path) or not_live (kicking a session that already ended). */
class NotFoundException extends ApiException
{
}
