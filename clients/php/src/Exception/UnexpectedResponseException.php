<?php

declare(strict_types=1);

namespace Wsproxy\Exception;

/** A success status whose body is not the JSON the API sends: something else answered. */
class UnexpectedResponseException extends ApiException
{
}
