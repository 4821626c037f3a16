"""Request decoding and response encoding in MLflow's JSON dialect (msgspec based)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from functools import cache
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from tracking.core.errors import API_DOCS_HINT, InvalidParameter

T = TypeVar("T")
JSON = "application/json"

_encoder = msgspec.json.Encoder()


def encode_double(value: float) -> float | str:
    """MLflow sends NaN and infinities as the JSON strings ``"NaN"`` and ``"±Infinity"``."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


# Statuses answered with a body and nothing special (not 1xx, 204 or 304).
_PLAIN_STATUSES = frozenset(range(200, 600)) - {204, 304}


class Encoded(Response[bytes]):
    """A response whose body is already encoded bytes.

    With nothing else to add (no headers, cookies or background task of its own or from its
    route's layers), it is answered by a two-message ASGI callable instead of Litestar's
    ``ASGIResponse``, whose header bookkeeping cost more than encoding a small answer.
    Anything else takes Litestar's path unchanged.
    """

    __slots__ = ()

    def to_asgi_response(
        self,
        app: Any,
        request: Any,
        *,
        background: Any = None,
        cookies: Any = None,
        encoded_headers: Any = None,
        headers: Any = None,
        is_head_response: bool = False,
        media_type: Any = None,
        status_code: int | None = None,
        type_encoders: Any = None,
    ) -> Any:
        if (
            self.headers
            or self.cookies
            or self.background
            or background
            or cookies
            or encoded_headers
            or headers
            or is_head_response
            or not isinstance(self.content, bytes)
            or not isinstance(self.media_type, str)
            or (self.status_code or 200) not in _PLAIN_STATUSES
        ):
            return super().to_asgi_response(
                app,
                request,
                background=background,
                cookies=cookies,
                encoded_headers=encoded_headers,
                headers=headers,
                is_head_response=is_head_response,
                media_type=media_type,
                status_code=status_code,
                type_encoders=type_encoders,
            )
        content_type = self.media_type
        if content_type.startswith("text/"):
            content_type = f"{content_type}; charset={self.encoding}"
        return _EncodedAnswer(self.status_code or status_code or 200, content_type, self.content)


class _EncodedAnswer:
    """The ASGI answer of an :class:`Encoded` response: its start and its one body message."""

    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode()),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def ok(payload: Any = None) -> Response[bytes]:
    body = b"{}" if payload is None else _encoder.encode(payload)
    return Encoded(content=body, status_code=200, media_type=JSON)


NUL_MESSAGE = "Text values may not contain the NUL character (U+0000)."


def refuse_nul(body: bytes) -> None:
    """Refuse a JSON body holding U+0000 (JSON can only spell it ``\\u0000``).

    PostgreSQL cannot store it in text; refusing it on every backend keeps SQLite data
    portable and the behaviour the same.
    """
    if b"\\u0000" in body:
        raise InvalidParameter(NUL_MESSAGE)


INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Any integer of 19+ digits may be out of int64 range; shorter ones never are. The regex runs in
# C over the raw body, so only the rare request holding such a digit run pays for the walk.
_LONG_DIGITS = re.compile(rb"\d{19,}")


def _out_of_int64(value: Any, where: str) -> str | None:
    """The path of the first integer outside int64 in a decoded value, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return where if not INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found = _out_of_int64(getattr(value, name), f"{where}.{name}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _out_of_int64(item, f"{where}[{i}]")
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _out_of_int64(item, f"{where}.{key}")
            if found:
                return found
    return None


def refuse_beyond_int64(value: Any) -> None:
    """Refuse a decoded request holding an integer no database column can store.

    Every integer on the wire (steps, timestamps, ids, sizes) lands in a BIGINT or is compared
    with one; PostgreSQL and SQLite both raise on a wider value, which must be the client's 400,
    never a 500 the MLflow client would retry.
    """
    found = _out_of_int64(value, "$")
    if found:
        raise InvalidParameter(
            f"Invalid request: the integer at `{found}` is outside the 64-bit signed range "
            f"[{INT64_MIN}, {INT64_MAX}]."
        )


# msgspec's "Expected `int | null`, got `str` - at `$.max_results`" for a value of the wrong type.
_WRONG_TYPE = re.compile(r"Expected `[^`]*`, got `[^`]*` - at `\$((?:\.[A-Za-z_]\w*|\[\d+\])+)`")
_PATH_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")


def _value_at(document: Any, path: str) -> tuple[str, Any] | None:
    """The last field name on a msgspec error path (``.tags[0].key``) and the value found there."""
    name: str | None = None
    value = document
    for field, index in _PATH_STEP.findall(path):
        if field:
            if not isinstance(value, dict) or field not in value:
                return None
            name, value = field, value[field]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                return None
            value = value[int(index)]
    return (name, value) if name is not None else None


def validation_message(exc: msgspec.ValidationError, document: Any) -> str:
    """A request-validation error in mlflow server's words for a value of the wrong type.

    mlflow server says ``Invalid value 123 for parameter 'name' supplied:  Hint: Value was of
    type 'int'. See the API docs…`` (the value as compact JSON, the Python type of the decoded
    JSON value); clients and tests match on that text. Other msgspec errors keep their wording.
    """
    text = str(exc)
    match = _WRONG_TYPE.fullmatch(text)
    found = _value_at(document, match.group(1)) if match else None
    if found is None:
        return f"Invalid request: {text}"
    name, value = found
    shown = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(shown) > 200:
        shown = f"{shown[:200]}..."
    return (
        f"Invalid value {shown} for parameter '{name}' supplied:  "
        f"Hint: Value was of type '{type(value).__name__}'. {API_DOCS_HINT}"
    )


def decode_json(body: bytes, type_: type[T]) -> T:
    """Decode a JSON body leniently (numeric strings become numbers); bad input is a 400."""
    if not body.strip():
        body = b"{}"
    refuse_nul(body)
    try:
        decoded = msgspec.json.decode(body, type=type_, strict=False)
    except msgspec.ValidationError as exc:
        # The body is valid JSON (only its shape is wrong), so it decodes untyped.
        raise InvalidParameter(validation_message(exc, msgspec.json.decode(body))) from None
    except msgspec.DecodeError as exc:
        raise InvalidParameter(f"Malformed JSON in request body: {exc}") from None
    if _LONG_DIGITS.search(body):
        refuse_beyond_int64(decoded)
    return decoded


async def read_json(request: Request[Any, Any, Any], type_: type[T]) -> T:
    return decode_json(await request.body(), type_)


@cache
def _list_fields(type_: type[Any]) -> frozenset[str]:
    info = msgspec.inspect.type_info(type_)
    names: set[str] = set()
    for f in getattr(info, "fields", ()):
        t = f.type
        if isinstance(t, msgspec.inspect.UnionType):
            if any(isinstance(x, msgspec.inspect.ListType) for x in t.types):
                names.add(f.encode_name)
        elif isinstance(t, msgspec.inspect.ListType):
            names.add(f.encode_name)
    return frozenset(names)


def read_query(request: Request[Any, Any, Any], type_: type[T]) -> T:
    """Decode GET query parameters; repeated keys fill list fields (``order_by=a&order_by=b``)."""
    lists = _list_fields(type_)  # type: ignore[arg-type]
    params = request.query_params
    data: dict[str, Any] = {}
    for key in params:
        data[key] = params.getall(key) if key in lists else params.get(key)
        if any("\x00" in value for value in params.getall(key)):
            raise InvalidParameter(NUL_MESSAGE)
    try:
        decoded = msgspec.convert(data, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidParameter(validation_message(exc, data)) from None
    refuse_beyond_int64(decoded)
    return decoded


class PageToken(msgspec.Struct, frozen=True):
    """Offset into an ordered result, tied to the query that produced it."""

    offset: int
    query: str = ""


def encode_page_token(offset: int, query_fingerprint: str = "") -> str:
    raw = msgspec.json.encode(PageToken(offset=offset, query=query_fingerprint))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str | None, query_fingerprint: str = "") -> int:
    """Return the offset in a token made by :func:`encode_page_token`; anything else is a 400."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        parsed = msgspec.json.decode(base64.urlsafe_b64decode(padded.encode()), type=PageToken)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidParameter(f"Invalid page token {token!r}") from None
    if not 0 <= parsed.offset <= INT64_MAX or (
        query_fingerprint and parsed.query and parsed.query != query_fingerprint
    ):
        raise InvalidParameter("Invalid page token: it belongs to a different query")
    return parsed.offset
