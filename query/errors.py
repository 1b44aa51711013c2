"""The one error model of the HTTP API, and the middleware that enforces it.

Every error answer, ours or aiohttp's (unknown route, wrong method, body too large), is

    {"error": {"code": "...", "message": "...", "details": [{"index", "field", "message"}]}}

Handlers raise ``ApiError`` (or let a domain error be mapped at the edge); the
middleware turns it, any ``web.HTTPException`` and any unexpected exception into that
JSON body. An unexpected exception is logged with its traceback and answered 500
without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from protocol.points import FieldError
from protocol.tokens import redact_tokens

log = logging.getLogger(__name__)

JSON: Final = "application/json"

# status -> the error code of the body: stable, documented, safe to switch on.
CODES: Final[Mapping[int, str]] = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "kind_conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answer: status, code (defaults from the status), message, details."""

    def __init__(
        self,
        status: int,
        message: str,
        details: Iterable[FieldError] = (),
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.details, self.headers)


def invalid(field: str, message: str, index: int | None = None) -> ApiError:
    """A 422 about one field (query parameters: ``index`` None)."""
    return ApiError(422, f"{field}: {message}", [FieldError(index, field, message)])


def json_response(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON,
                        headers=headers)


def error_response(
    status: int, code: str, message: str, details: Iterable[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    # Messages may quote what the client sent (a name, a field): never a whole token.
    body = {
        "error": {
            "code": code,
            "message": redact_tokens(message),
            "details": [
                {"index": d.index, "field": d.field, "message": redact_tokens(d.message)}
                for d in details
            ],
        }
    }
    return json_response(body, status, headers)


# Headers of aiohttp's own exceptions worth keeping on the JSON answer.
_KEPT_HEADERS: Final = ("Allow", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining")


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's 404/405/413 (and any other HTTPException) as our JSON error."""
    status = exc.status
    if status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        message = f"method {getattr(exc, 'method', '')} not allowed; allowed: {allowed}"
    elif status == 404:
        message = "no such route"
    else:  # e.g. 413: "Maximum request body size 1048576 exceeded."
        message = exc.text or exc.reason
    headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
    return error_response(status, CODES.get(status, "error"), message, (), headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        return from_http_exception(exc)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method,
                      redact_tokens(request.path))
        return error_response(500, "internal", "internal server error")
