"""``s3://`` URIs parsed once into a checked bucket and key (external model sources).

Used twice with one rule set: for the operator's allow-list (``MLGATE_EXTERNAL_SOURCES``, read
at start) and for a client's model version ``source``. Nothing is normalised that could make
two spellings name different objects: percent-encoding, ``\\``, ``?``, ``#``, ``;``, control
characters, surrounding whitespace, empty segments (``//``), ``.`` and ``..`` segments and
bucket names outside S3's rules (which also keeps ``user@host:port`` forms out) are refused.
The only canonicalisation is the scheme's case and one trailing ``/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EXTERNAL_SOURCES_SETTING = "MLGATE_EXTERNAL_SOURCES"
MAX_S3_URI_LEN = 1100  # "s3://" + a 63-character bucket + "/" + a 1024-byte key
# S3's bucket naming rules: 3-63 characters, lower-case letters, digits, '.' and '-', starting
# and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_FORBIDDEN = {
    "%": "percent-encoding is not allowed (CVE-2024-1560: '%2e%2e' decoded to '..' after checks)",
    "\\": "backslashes are not allowed (CVE-2023-2780: '\\..\\' escaped '/'-based checks)",
    "?": "queries are not allowed (CVE-2023-6909: '?' hid a path from the traversal check)",
    "#": "fragments are not allowed (CVE-2024-1483: '#' hid a path from the traversal check)",
    ";": "';' is not allowed (CVE-2024-1594: URI params hid '../' from the check)",
}


@dataclass(frozen=True, slots=True)
class S3Location:
    """A checked bucket and key; ``key`` has no leading or trailing '/' ('' = whole bucket)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}/"

    def contains(self, other: S3Location) -> bool:
        """``other`` is this location or below it, on a path-segment boundary."""
        if other.bucket != self.bucket:
            return False
        return not self.key or other.key == self.key or other.key.startswith(f"{self.key}/")


def is_s3_uri(raw: str) -> bool:
    return raw[:5].lower() == "s3://"


def parse_s3_uri(raw: str, *, allow_bucket: bool = False) -> S3Location:
    """Parse ``s3://bucket/key`` or raise ValueError saying why (``allow_bucket``: the key may
    be empty, i.e. the whole bucket)."""
    if len(raw) > MAX_S3_URI_LEN:
        raise ValueError(f"it is longer than {MAX_S3_URI_LEN} characters")
    if raw != raw.strip() or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise ValueError("whitespace at the ends and control characters are not allowed")
    for char, why in _FORBIDDEN.items():
        if char in raw:
            raise ValueError(why)
    if not is_s3_uri(raw):
        raise ValueError("it is not an s3:// URI")
    bucket, _, key = raw[5:].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
        raise ValueError(f"'{bucket[:80]}' is not a valid S3 bucket name")
    key = key.removesuffix("/")
    segments = key.split("/") if key else []
    if any(segment == "" for segment in segments):
        raise ValueError("empty path segments ('//') are not allowed")
    if any(segment in (".", "..") for segment in segments):
        raise ValueError("'.' and '..' path segments are not allowed")
    if not segments and not allow_bucket:
        raise ValueError("it names a whole bucket, not a model's folder")
    return S3Location(bucket, key)


def parse_s3_prefixes(value: str) -> tuple[S3Location, ...]:
    """The allow-list setting: comma-separated ``s3://bucket/prefix/`` (ValueError if bad)."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    return tuple(parse_s3_uri(item, allow_bucket=True) for item in items)
