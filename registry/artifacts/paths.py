"""Parse-once canonicalisation of client-supplied artifact paths into :class:`ArtifactPath`.

Every artifact path that comes from a client (an HTTP path, a ``?path=`` parameter, a run's
``artifact_uri``, a model version ``source``) goes through :func:`parse_artifact_path` exactly
once. What comes out is an :class:`ArtifactPath`: a relative POSIX path of plain segments, and
the only type the storage backends accept. Nothing downstream decodes, joins or normalises a
client string again, so there is no second interpretation for an attacker to aim at.

The checks are deliberately stricter than MLflow's ``validate_path_is_safe``: MLflow shipped a
long series of path-traversal / local-file-inclusion fixes, each closing one spelling of the same
attack, and each check below names the class it closes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from tracking.core.errors import InvalidParameter

# S3's key limit (bytes); far below PATH_MAX, and it keeps keys and file names interchangeable.
MAX_PATH_BYTES = 1024
# NAME_MAX of Linux and macOS file systems: a longer segment would be an OSError (a 500) later.
MAX_SEGMENT_BYTES = 255

ARTIFACTS_SCHEME = "mlflow-artifacts"
# The registry's own copies of registered versions' files (``registry.artifacts.freeze``). The
# proxy serves them for reading and refuses every client write or delete below this segment.
FROZEN_AREA = "mlgate-frozen"
# Where the proxy serves the store over HTTP (``registry.artifacts.api`` mounts it there).
ARTIFACTS_HTTP_ROOT = "/api/2.0/mlflow-artifacts/artifacts"

# The store's top-level folder for the server's own files (signed audit checkpoints, public
# keys). It is never an experiment id, and the proxy refuses every write and delete under it.
RESERVED_ROOT = "_mlgate"

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# An RFC 3986 scheme at the start ("file:", "s3:", "mlflow-artifacts:") or a Windows drive ("C:").
_SCHEME_OR_DRIVE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_ENCODED_SEPARATOR = re.compile(rb"%(2[fF]|5[cC])")

# Characters that are never part of an artifact path, with the attack class each one carries.
_FORBIDDEN_CHARACTERS = {
    # CVE-2023-2780 (and the later '\..\filename' reports, e.g. CVE-2023-6977): a backslash is a
    # separator to Windows and to some normalisers, so '\..\' escaped checks that split on '/'.
    "\\": "backslashes are not allowed",
    # CVE-2023-6909 / CVE-2024-1483: a query ('?') and then a fragment ('#') smuggled into
    # artifact_location / source made URI parsing and the path check see different paths.
    "?": "'?' is not allowed",
    "#": "'#' is not allowed",
    # CVE-2024-1593: ';' starts URI "params", which urlparse split off the path, hiding '../'.
    ";": "';' is not allowed",
}


def _invalid(raw: object, why: str) -> InvalidParameter:
    shown = raw if isinstance(raw, str) and len(raw) <= 200 else f"{str(raw)[:200]}..."
    return InvalidParameter(f"Invalid artifact path {shown!r}: {why}.")


def _check_segment(segment: str, raw: object) -> None:
    """Refuse one path segment that is not a plain, portable file name."""
    if segment in ("", ".", ".."):
        # CVE-2023-1177 / CVE-2023-2356 / CVE-2023-6831: '..' walks out of the artifact root
        # (read, write or delete anywhere the server can reach). Empty segments ('a//b', a
        # leading '//') are refused too: '//host/x' is a network path on some systems.
        raise _invalid(raw, "'..', '.' and empty segments are not allowed")
    if "/" in segment:
        raise _invalid(raw, "a segment must not contain '/'")
    for char in segment:
        if unicodedata.category(char) == "Cc":
            # NUL truncates paths in C libraries, CR/LF would split the Content-Disposition
            # header a download sends back.
            raise _invalid(raw, "control characters are not allowed")
        if char in _FORBIDDEN_CHARACTERS:
            raise _invalid(raw, _FORBIDDEN_CHARACTERS[char])
    if _PERCENT_ESCAPE.search(segment):
        # CVE-2024-1560: the server decoded the path twice, so '%252e%252e' became '..' after
        # the check. The HTTP layer decodes exactly once; a '%XX' still present afterwards is a
        # second encoding layer and is refused rather than decoded again.
        raise _invalid(raw, "percent-encoded sequences are not allowed")
    try:
        encoded = segment.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(raw, "it is not valid UTF-8") from None
    if len(encoded) > MAX_SEGMENT_BYTES:
        raise _invalid(raw, f"a segment is longer than {MAX_SEGMENT_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class ArtifactPath:
    """A canonical, relative POSIX artifact path: the only path the storage backends accept.

    ``parts`` are plain file names. The constructor re-checks them, so even a hand-built value
    cannot carry '..', separators or control characters; the empty tuple is the store's root.
    """

    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.parts, tuple):
            raise TypeError("ArtifactPath.parts must be a tuple of strings")
        for part in self.parts:
            if not isinstance(part, str):
                raise TypeError("ArtifactPath.parts must be a tuple of strings")
            _check_segment(part, "/".join(self.parts))
        if len(self.posix.encode("utf-8")) > MAX_PATH_BYTES:
            raise _invalid(self.posix, f"it is longer than {MAX_PATH_BYTES} bytes")

    @classmethod
    def root(cls) -> ArtifactPath:
        return cls(())

    @property
    def is_root(self) -> bool:
        return not self.parts

    @property
    def posix(self) -> str:
        return "/".join(self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""

    @property
    def parent(self) -> ArtifactPath:
        return ArtifactPath(self.parts[:-1])

    def joinpath(self, *others: ArtifactPath | str) -> ArtifactPath:
        """Append canonical paths, or raw relative strings (parsed with the same rules)."""
        parts = list(self.parts)
        for other in others:
            tail = other if isinstance(other, ArtifactPath) else parse_artifact_path(other)
            parts.extend(tail.parts)
        return ArtifactPath(tuple(parts))

    def is_relative_to(self, other: ArtifactPath) -> bool:
        """True when ``self`` is ``other`` or lies below it (segment-wise, not string-prefix)."""
        return self.parts[: len(other.parts)] == other.parts

    @property
    def is_reserved(self) -> bool:
        """True under :data:`RESERVED_ROOT`, which only the server itself writes."""
        return bool(self.parts) and self.parts[0] == RESERVED_ROOT

    def to_uri(self) -> str:
        """The ``mlflow-artifacts:/<path>`` URI the client resolves through this proxy."""
        return f"{ARTIFACTS_SCHEME}:/{self.posix}"

    def to_http_path(self) -> str:
        """The HTTP path serving this location on this server, each segment percent-encoded."""
        return "/".join([ARTIFACTS_HTTP_ROOT, *(quote(part, safe="") for part in self.parts)])

    def __str__(self) -> str:
        return self.posix


def in_frozen_area(path: ArtifactPath) -> bool:
    """True when ``path`` is the frozen area or lies inside it.

    Compared case-insensitively: on a case-insensitive file system (macOS, some mounts)
    ``MLGATE-FROZEN`` is the same folder, and refusing it costs nothing elsewhere.
    """
    return bool(path.parts) and path.parts[0].casefold() == FROZEN_AREA


def parse_artifact_path(
    raw: str, *, allow_root: bool = False, dot_segments: bool = False
) -> ArtifactPath:
    """Canonicalise one client-supplied relative path (already percent-decoded exactly once).

    A single trailing '/' is accepted (the client sends ``…/artifacts/`` to mean a directory).
    With ``dot_segments`` (the artifact routes' paths), '.' segments are dropped, as mlflow
    server reads them: ``download_artifacts(artifact_path=".")`` lists ``<root>/.``. Elsewhere
    (model version sources) they are refused. Anything that could name a location outside the
    store, '..' first of all, is a 400. Every later check (reserved and frozen areas, grants)
    sees only the canonical segments this returns.
    """
    if not isinstance(raw, str):
        raise _invalid(raw, "it must be a string")
    if raw.startswith(("/", "\\")):
        # CVE-2023-1176 / CVE-2023-1177: absolute paths (and file:///etc/... sources) pointed the
        # server at arbitrary local files.
        raise _invalid(raw, "absolute paths are not allowed")
    if _SCHEME_OR_DRIVE.match(raw):
        # CVE-2023-1177 class: a 'file:', 's3:' or other URI where a relative path is expected
        # (and 'C:' drive letters) re-root the lookup outside the artifact store.
        raise _invalid(raw, "URI schemes and drive letters are not allowed")
    body = raw[:-1] if raw.endswith("/") else raw
    # '.' names the directory it is in: dropping it cannot move the path anywhere else. The
    # other segments are still checked one by one ('..' and empty ones refused) below.
    parts = tuple(p for p in body.split("/") if not (dot_segments and p == ".")) if body else ()
    if not parts:
        if allow_root:
            return ArtifactPath.root()
        raise _invalid(raw, "the path must not be empty")
    if _SCHEME_OR_DRIVE.match(parts[0]):
        # The same check on the canonical path ('./C:/x' is 'C:/x'), so it is a fixed point.
        raise _invalid(raw, "URI schemes and drive letters are not allowed")
    return ArtifactPath(parts)


def decode_request_path(raw: bytes) -> str:
    """Percent-decode the artifact part of a raw request path exactly once, strictly.

    ``%2F`` and ``%5C`` are refused before decoding: an encoded separator looks like one file
    name to the router but like two segments to anything that decodes again (CVE-2024-1560).
    """
    if _ENCODED_SEPARATOR.search(raw):
        raise _invalid(raw.decode("latin-1"), "encoded '/' or '\\' separators are not allowed")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(raw.decode("latin-1"), "it is not valid UTF-8") from None


def parse_artifact_uri(uri: str) -> ArtifactPath:
    """The store path behind an ``mlflow-artifacts:/<path>`` URI (run, model or version root).

    Host-bearing forms (``mlflow-artifacts://host/…``) are refused: they name another server,
    and this proxy only serves its own store.
    """
    if not isinstance(uri, str) or not uri.startswith(f"{ARTIFACTS_SCHEME}:"):
        raise InvalidParameter(f"Not an '{ARTIFACTS_SCHEME}:' URI: {uri!r}.")
    rest = uri[len(ARTIFACTS_SCHEME) + 1 :]
    if rest.startswith("///"):
        rest = rest[3:]
    elif rest.startswith("//"):
        raise InvalidParameter(f"'{ARTIFACTS_SCHEME}:' URIs naming a host are not served: {uri!r}.")
    elif rest.startswith("/"):
        rest = rest[1:]
    return parse_artifact_path(rest, allow_root=True)


def client_file_name(raw: str) -> str:
    """The base name of a client-side local file path (multipart ``path`` field), validated.

    The client sends its own local path (``/home/u/model.bin`` or ``C:\\u\\model.bin``); only the
    last component is used, and it must be a valid single segment.
    """
    if not isinstance(raw, str) or not raw:
        raise InvalidParameter("'path' must name the file being uploaded.")
    name = re.split(r"[/\\]", raw)[-1]
    return ArtifactPath((name,)).name


def run_artifact_root(experiment_id: str, artifact_uri: str) -> ArtifactPath | None:
    """The store folder holding a run's artifacts, or None when mlgate's store does not.

    Only an ``mlflow-artifacts:/<experiment_id>/...`` location below the run's own experiment
    counts. Anything else (a ``file:``/``s3:`` URI recorded by another tool, a host-bearing
    URI, the store root) is never opened: a recorded URI is client data, and following it is
    MLflow's CVE-2023-6909 / CVE-2024-0520 class of bug.
    """
    try:
        root = parse_artifact_uri(artifact_uri)
    except InvalidParameter:
        return None
    if len(root.parts) < 2 or root.parts[0] != str(experiment_id):
        return None
    return root
