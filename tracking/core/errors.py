"""MLflow-shaped API errors and the single place that renders them as JSON."""

from __future__ import annotations

import errno
import logging
import re
import socket
import sqlite3
from typing import Any

import msgspec
import sqlalchemy.exc
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)

log = logging.getLogger("mlgate.errors")

JSON = "application/json"


class MlflowError(Exception):
    """An error the client sees as ``{"error_code", "message"}`` with an HTTP status."""

    error_code = "INTERNAL_ERROR"
    status_code = 500
    headers: dict[str, str] | None = None

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code
        if status_code is not None:
            self.status_code = status_code
        if headers is not None:
            self.headers = headers


class InvalidParameter(MlflowError):
    error_code = "INVALID_PARAMETER_VALUE"
    status_code = 400


class ResourceNotFound(MlflowError):
    error_code = "RESOURCE_DOES_NOT_EXIST"
    status_code = 404


class ResourceAlreadyExists(MlflowError):
    # MLflow answers a duplicate name with 400, not 409, and the client relies on the code.
    error_code = "RESOURCE_ALREADY_EXISTS"
    status_code = 400


class InvalidState(MlflowError):
    error_code = "INVALID_STATE"
    status_code = 400


class PermissionDenied(MlflowError):
    error_code = "PERMISSION_DENIED"
    status_code = 403


class Unauthenticated(MlflowError):
    error_code = "UNAUTHENTICATED"
    status_code = 401
    # The MLflow client (requests) sends credentials up front; browsers and curl need the hint.
    headers = {"WWW-Authenticate": 'Basic realm="mlgate", charset="UTF-8"'}


class TooManyRequests(MlflowError):
    # The MLflow client retries 429 with backoff and honours Retry-After.
    error_code = "REQUEST_LIMIT_EXCEEDED"
    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class UnsupportedMediaType(MlflowError):
    error_code = "INVALID_PARAMETER_VALUE"
    status_code = 415


class TemporarilyUnavailable(MlflowError):
    # MLflow's client retries 503 with backoff (it is in its retry codes) and honours
    # Retry-After; a 500 would be retried too but tells the operator nothing.
    error_code = "TEMPORARILY_UNAVAILABLE"
    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class InsufficientStorage(MlflowError):
    # WebDAV's 507: the request was fine, the server has no room to store it. Not retried
    # blindly by the MLflow client (it is not in its retry codes), which is what we want.
    error_code = "INSUFFICIENT_STORAGE"
    status_code = 507


class NotImplementedFeature(MlflowError):
    error_code = "NOT_IMPLEMENTED"
    status_code = 501


def error_response(
    error_code: str, message: str, status_code: int, headers: dict[str, str] | None = None
) -> Response[bytes]:
    body = msgspec.json.encode({"error_code": error_code, "message": message})
    return Response(content=body, status_code=status_code, media_type=JSON, headers=headers)


# mlflow server ends its "missing" and "wrong type" messages with this hint; scripts and tests
# match on the whole text, so every missing-parameter refusal gets it here, in one place.
API_DOCS_HINT = "See the API docs for more information about request parameters."
_MISSING_PARAMETER = re.compile(r"Missing value for required parameter '[^']*'\.")


def mlflow_message(message: str) -> str:
    """``message`` in mlflow server's exact wording where mlgate's differs only by the hint."""
    if _MISSING_PARAMETER.fullmatch(message):
        return f"{message} {API_DOCS_HINT}"
    return message


def _handle_mlflow_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, MlflowError)
    if exc.status_code >= 500:
        log.error("%s: %s", exc.error_code, exc.message)
    return error_response(
        exc.error_code, mlflow_message(exc.message), exc.status_code, headers=exc.headers
    )


def _handle_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, NotFoundException):
        return error_response(
            "ENDPOINT_NOT_FOUND", f"No endpoint {request.method} {request.url.path}", 404
        )
    if isinstance(exc, MethodNotAllowedException):
        return error_response(
            "ENDPOINT_NOT_FOUND",
            f"Method {request.method} is not allowed on {request.url.path}",
            405,
            headers=dict(exc.headers or {}),
        )
    if isinstance(exc, ValidationException):
        return error_response("INVALID_PARAMETER_VALUE", str(exc.detail), 400)
    code = {
        400: "BAD_REQUEST",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        413: "REQUEST_LIMIT_EXCEEDED",
        415: "INVALID_PARAMETER_VALUE",
        429: "REQUEST_LIMIT_EXCEEDED",
    }.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "BAD_REQUEST")
    return error_response(code, str(exc.detail), exc.status_code, headers=dict(exc.headers or {}))


# SQLSTATEs PostgreSQL answers for text it cannot hold: U+0000 (22021) and characters outside
# the database encoding (22P05). They come from client strings, so they are bad input (a 400),
# never a 500 the MLflow client would retry for minutes; the transaction has rolled back.
_CLIENT_TEXT_SQLSTATES = frozenset({"22021", "22P05"})


def client_text_error(exc: BaseException) -> MlflowError | None:
    """The 400 a database error stands for when a client's text could not be stored, or None."""
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        if getattr(candidate, "sqlstate", None) in _CLIENT_TEXT_SQLSTATES:
            return InvalidParameter(
                "Text values may not contain NUL (U+0000) or characters the database cannot store."
            )
    return None


# SQLSTATE classes and codes meaning "the database cannot serve now": connection exceptions
# (08xxx), admin/crash shutdown and "starting up" (57P01-57P03), too many connections (53300).
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# SQLite's ways of saying the same: another process holds the lock beyond the busy timeout, the
# file cannot be opened (removed, unmounted, permissions) or read.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")
_SQLITE_FULL = "database or disk is full"
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

UNAVAILABLE_MESSAGE = "The database is temporarily unavailable; retry shortly."
DISK_FULL_MESSAGE = "The server has no space left to store this request."


OUT_OF_RANGE_MESSAGE = "A number in the request is outside the range the database can store."


def _number_out_of_range(item: BaseException) -> bool:
    """A bound integer too wide for the column: the backstop behind the wire's int64 check
    (``tracking.core.wire.refuse_beyond_int64``) for any value that reached SQL another way."""
    text = str(item)
    return (
        (isinstance(item, OverflowError) and "SQLite INTEGER" in text)
        or "out of int64 range" in text
        or getattr(item, "sqlstate", None) == "22003"  # numeric_value_out_of_range
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (``orig``) and its causes, a bounded walk."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 12:
        item = todo.pop(0)
        if item is None or any(item is x for x in seen):
            continue
        seen.append(item)
        orig = getattr(item, "orig", None)
        todo.extend(
            [orig if isinstance(orig, BaseException) else None, item.__cause__, item.__context__]
        )
    return seen


def fault_error(exc: BaseException) -> MlflowError | None:
    """The service answer a fault stands for, or None for a genuine bug (a 500).

    A database that cannot be reached (restart, network cut, pool exhausted, SQLite file locked
    or gone) is a 503 with Retry-After; a full disk is a 507; text the database cannot hold is
    the client's 400.
    """
    bad_text = client_text_error(exc)
    if bad_text is not None:
        return bad_text
    for item in _causes(exc):
        if isinstance(item, MlflowError):
            return item
        if _number_out_of_range(item):
            return InvalidParameter(OUT_OF_RANGE_MESSAGE)
        if isinstance(item, OSError) and item.errno in _DISK_FULL_ERRNOS:
            return InsufficientStorage(DISK_FULL_MESSAGE)
        # SQLite's messages are only believed from SQLite itself, never from other text.
        sqlite_text = str(item).lower() if isinstance(item, sqlite3.Error) else ""
        if _SQLITE_FULL in sqlite_text:
            return InsufficientStorage(DISK_FULL_MESSAGE)
        if (
            (isinstance(item, sqlalchemy.exc.DBAPIError) and item.connection_invalidated)
            # The pool's own timeout (every connection busy or none can be made), a refused,
            # reset or timed-out socket, an unresolvable host.
            or isinstance(
                item,
                sqlalchemy.exc.TimeoutError | ConnectionError | TimeoutError | socket.gaierror,
            )
            or str(getattr(item, "sqlstate", "") or "").startswith("08")
            or getattr(item, "sqlstate", None) in _UNAVAILABLE_SQLSTATES
            or any(marker in sqlite_text for marker in _SQLITE_UNAVAILABLE)
            # asyncpg's "connection is closed" / "connection was closed in the middle of
            # operation" carry no SQLSTATE.
            or (
                type(item).__module__.startswith("asyncpg")
                and type(item).__name__ in {"InterfaceError", "ConnectionDoesNotExistError"}
            )
        ):
            return TemporarilyUnavailable(UNAVAILABLE_MESSAGE)
    return None


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    known = fault_error(exc)
    if known is not None:
        if known.status_code >= 500:
            # An outage, not a bug: one line naming the cause, no traceback.
            log.warning("%s on %s %s: %s", known.error_code, request.method, request.url.path, exc)
        return error_response(
            known.error_code, known.message, known.status_code, headers=known.headers
        )
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response("INTERNAL_ERROR", "Internal server error", 500)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    MlflowError: _handle_mlflow_error,
    HTTPException: _handle_http_exception,
    Exception: _handle_unexpected,
}
