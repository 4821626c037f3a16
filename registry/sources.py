"""Model version sources: parsed once, checked against tracking, stored in canonical form.

A version's ``source`` decides which bytes ``models:/name/<v>`` loads, so it is an attack
surface: MLflow shipped path-traversal and local-file-inclusion fixes for it repeatedly
(CVE-2023-1177, CVE-2023-2780, CVE-2023-6909, CVE-2024-1483, CVE-2024-1560, CVE-2024-1594).
Instead of blocking bad spellings one by one, only these forms are accepted, each resolved to
the artifact root it must live under:

- ``models:/m-<id>``: a logged model; stored files are the logged model's artifacts;
- ``models:/<name>/<version>`` (also ``/<stage>``, ``/latest``, ``@<alias>``): a registered
  version, which ``MlflowClient.copy_model_version`` sends; the new version shares the source
  version's frozen files and lineage (resolved by the registry service, stored as
  ``models:/<name>/<version>``);
- ``runs:/<run_id>[/<relative path>]``: a run's artifacts (or the logged model the run
  produced under that name, where MLflow 3 puts a model logged in a run);
- ``mlflow-artifacts:/<path>``: a proxied path, only when it sits under the given run's or
  logged model's artifact root;
- ``s3://<bucket>/<path>``: a model trained elsewhere, only under a prefix the operator listed
  in ``MLGATE_EXTERNAL_SOURCES`` (on a path-segment boundary); its bytes are copied into the
  registry's frozen area at registration, so later changes to the bucket reach nothing.

Everything else (``file:``, unlisted ``s3:``, ``http:``, absolute or relative local paths, ``..``,
percent-encoding, backslashes, queries and fragments, host-bearing URIs) is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from registry.artifacts.paths import ArtifactPath, parse_artifact_path, parse_artifact_uri
from registry.errors import InvalidSource
from registry.uris import ModelVersionUri, parse_model_uri
from tracking import service as tracking
from tracking.core.errors import InvalidParameter, ResourceNotFound
from tracking.core.object_uris import EXTERNAL_SOURCES_SETTING, S3Location, parse_s3_uri
from tracking.schemas import LoggedModelOut, RunOut

MAX_SOURCE_LEN = 2000
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
# Characters refused anywhere in a source, with the attack class each one carries.
_FORBIDDEN = {
    "\\": "backslashes are not allowed (CVE-2023-2780: '\\..\\' escaped '/'-based checks)",
    "?": "queries are not allowed (CVE-2023-6909: '?' hid a path from the traversal check)",
    "#": "fragments are not allowed (CVE-2024-1483: '#' hid a path from the traversal check)",
    ";": "';' is not allowed (CVE-2024-1594: URI params hid '../' from the check)",
    "%": "percent-encoding is not allowed (CVE-2024-1560: '%2e%2e' decoded to '..' after checks)",
}


@dataclass(frozen=True, slots=True)
class LoggedModelSource:
    model_id: str

    @property
    def canonical(self) -> str:
        return f"models:/{self.model_id}"


@dataclass(frozen=True, slots=True)
class RunSource:
    run_id: str
    path: ArtifactPath

    @property
    def canonical(self) -> str:
        return (
            f"runs:/{self.run_id}/{self.path.posix}" if self.path.parts else f"runs:/{self.run_id}"
        )


@dataclass(frozen=True, slots=True)
class ArtifactSource:
    path: ArtifactPath

    @property
    def canonical(self) -> str:
        return self.path.to_uri()


@dataclass(frozen=True, slots=True)
class RegisteredVersionSource:
    """A registered version (``models:/name/3``, ``/Production``, ``/latest``, ``@champion``)."""

    uri: ModelVersionUri


@dataclass(frozen=True, slots=True)
class ExternalSource:
    """An object-store folder outside mlgate (checked against the allow-list on resolve)."""

    location: S3Location

    @property
    def canonical(self) -> str:
        return self.location.uri


VersionSource = (
    LoggedModelSource | RunSource | ArtifactSource | RegisteredVersionSource | ExternalSource
)
# Appended to every refusal of a scheme or a local path: where external sources are allowed.
_EXTERNAL_HINT = (
    f"model files stored elsewhere must be s3:// URIs under a prefix listed in "
    f"{EXTERNAL_SOURCES_SETTING}"
)


def parse_version_source(raw: str | None) -> VersionSource:
    """Parse a client-supplied ``source`` into one of the three accepted forms, or refuse it."""
    if raw is None or raw == "":
        raise InvalidParameter("Missing value for required parameter 'source'.")
    if len(raw) > MAX_SOURCE_LEN:
        raise InvalidSource(raw, f"it is longer than {MAX_SOURCE_LEN} characters")
    if raw != raw.strip() or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise InvalidSource(raw, "whitespace at the ends and control characters are not allowed")
    for char, why in _FORBIDDEN.items():
        if char in raw:
            raise InvalidSource(raw, why)
    match = _SCHEME.match(raw)
    if match is None:
        if raw.startswith("/"):
            # CVE-2023-1177 class: a bare local path made the server read arbitrary files.
            raise InvalidSource(raw, f"absolute local paths are not allowed; {_EXTERNAL_HINT}")
        raise InvalidSource(
            raw,
            "a source must be a models:/, runs:/<run_id>/<path> or mlflow-artifacts:/ URI; "
            + _EXTERNAL_HINT,
        )
    scheme = match.group(1).lower()
    rest = raw[match.end() :]
    try:
        if scheme == "models":
            return _parse_models(raw, rest)
        if scheme == "runs":
            return _parse_runs(raw, rest)
        if scheme == "mlflow-artifacts":
            path = parse_artifact_uri(f"mlflow-artifacts:{rest}")
            if path.is_root:
                raise InvalidSource(raw, "it names the whole artifact store")
            return ArtifactSource(path)
    except InvalidSource:
        raise
    except InvalidParameter as exc:
        raise InvalidSource(raw, exc.message.rstrip(".")) from None
    if scheme == "s3":
        try:
            return ExternalSource(parse_s3_uri(raw))
        except ValueError as exc:
            raise InvalidSource(raw, f"{exc}; {_EXTERNAL_HINT}") from None
    # CVE-2023-1177 / CVE-2023-6909: file:// (and any scheme the server would open itself:
    # http:, hdfs:, a Windows drive letter) points the registry at storage it does not guard.
    raise InvalidSource(raw, f"the scheme '{scheme}:' is not allowed; {_EXTERNAL_HINT}")


def _parse_models(raw: str, rest: str) -> LoggedModelSource | RegisteredVersionSource:
    if not rest.startswith("/") or rest.startswith("//"):
        raise InvalidSource(
            raw, "models:/ sources must be models:/m-<logged model id> or models:/<name>/<version>"
        )
    model_id = rest[1:].removesuffix("/")
    if _LOGGED_MODEL_ID.fullmatch(model_id):
        return LoggedModelSource(model_id)
    # A registered version (copy_model_version): the strict models:/ URI parser decides.
    return RegisteredVersionSource(parse_model_uri(f"models:{rest}"))


def _parse_runs(raw: str, rest: str) -> RunSource:
    if not rest.startswith("/") or rest.startswith("//"):
        raise InvalidSource(raw, "runs:/ sources must be runs:/<run_id>/<relative path>")
    run_id, _, path = rest[1:].partition("/")
    if not _RUN_ID.fullmatch(run_id):
        raise InvalidSource(raw, f"'{run_id}' is not a run id")
    return RunSource(run_id, parse_artifact_path(path, allow_root=True))


# --- resolution against tracking -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedSource:
    """What a version stores: the checked source, its concrete location and its provenance."""

    source: str
    storage_location: str
    run_id: str | None
    model_id: str | None


async def _run(s: AsyncSession, run_id: str, raw: str) -> RunOut:
    """The run's info and model outputs (its data is not needed to resolve a source)."""
    try:
        return await tracking.get_run_outputs(s, run_id)
    except ResourceNotFound:
        raise InvalidSource(raw, f"run '{run_id}' does not exist") from None


async def _logged_model(s: AsyncSession, model_id: str, raw: str) -> LoggedModelOut:
    try:
        return await tracking.get_logged_model(s, model_id)
    except ResourceNotFound:
        raise InvalidSource(raw, f"logged model '{model_id}' does not exist") from None


def _root(uri: str, raw: str, owner: str) -> ArtifactPath:
    try:
        return parse_artifact_uri(uri)
    except InvalidParameter:
        raise InvalidSource(
            raw, f"the artifact root of {owner} is not a proxied location"
        ) from None


async def _model_logged_by_run(s: AsyncSession, run: RunOut, name: str) -> LoggedModelOut | None:
    """The logged model ``run`` produced under ``name`` (the newest step wins), if any.

    MLflow 3 writes a model logged inside a run to the logged model's own root, not under the
    run's artifacts, so ``runs:/<id>/model`` must resolve there (as the client's own
    ``register_model`` does) or the version would point at an empty folder.
    """
    found: list[tuple[int, LoggedModelOut]] = []
    for output in run.outputs.model_outputs if run.outputs else []:
        try:
            model = await tracking.get_logged_model(s, output.model_id)
        except ResourceNotFound:
            continue
        if model.info.name == name:
            found.append((output.step, model))
    return max(found, key=lambda item: item[0])[1] if found else None


async def resolve_version_source(
    s: AsyncSession,
    raw: str | None,
    *,
    run_id: str | None,
    model_id: str | None,
    external: Sequence[S3Location] = (),
    run: RunOut | None = None,
) -> ResolvedSource:
    """Check ``raw`` (and the run_id/model_id sent with it) against tracking; see the module doc.

    ``external``: the allow-listed object-store prefixes (``MLGATE_EXTERNAL_SOURCES``).
    ``run``: a ``runs:/`` source's run with its model outputs, when the caller has already
    read it in this transaction (it is then not read again).
    """
    parsed = parse_version_source(raw)
    assert raw is not None
    if isinstance(parsed, RegisteredVersionSource):
        # Resolved by the registry service (it needs the registry's tables).
        raise InvalidSource(raw, "a registered version is not resolved here")
    run_id = run_id or None
    model_id = model_id or None
    if isinstance(parsed, ExternalSource):
        return await _resolve_external(s, raw, parsed, run_id, model_id, external)
    if isinstance(parsed, LoggedModelSource):
        return await _resolve_logged_model(s, raw, parsed, run_id, model_id)
    if isinstance(parsed, RunSource):
        return await _resolve_run(s, raw, parsed, run_id, model_id, run)
    return await _resolve_artifacts(s, raw, parsed, run_id, model_id)


async def _resolve_external(
    s: AsyncSession,
    raw: str,
    parsed: ExternalSource,
    run_id: str | None,
    model_id: str | None,
    external: Sequence[S3Location],
) -> ResolvedSource:
    if not any(prefix.contains(parsed.location) for prefix in external):
        raise InvalidSource(raw, f"it is not under a prefix listed in {EXTERNAL_SOURCES_SETTING}")
    # Lineage stated with an external source must at least name existing objects.
    if run_id is not None:
        await _run(s, run_id, raw)
    if model_id is not None:
        await _logged_model(s, model_id, raw)
    return ResolvedSource(parsed.canonical, parsed.canonical, run_id, model_id)


async def _resolve_logged_model(
    s: AsyncSession,
    raw: str,
    parsed: LoggedModelSource,
    run_id: str | None,
    model_id: str | None,
) -> ResolvedSource:
    if model_id is not None and model_id != parsed.model_id:
        raise InvalidSource(raw, f"model_id '{model_id}' does not match the source")
    model = await _logged_model(s, parsed.model_id, raw)
    source_run = model.info.source_run_id or None  # "" on the wire when unset
    if run_id is not None and source_run and run_id != source_run:
        raise InvalidSource(raw, f"run_id '{run_id}' is not the run that logged this model")
    if run_id is not None and not source_run:
        await _run(s, run_id, raw)
    location = _root(model.info.artifact_uri, raw, f"logged model {parsed.model_id}")
    return ResolvedSource(
        parsed.canonical, location.to_uri(), run_id or source_run, parsed.model_id
    )


async def _resolve_run(
    s: AsyncSession,
    raw: str,
    parsed: RunSource,
    run_id: str | None,
    model_id: str | None,
    known: RunOut | None = None,
) -> ResolvedSource:
    if run_id is not None and run_id != parsed.run_id:
        raise InvalidSource(raw, f"run_id '{run_id}' does not match the source's run")
    if known is not None and known.info.run_id == parsed.run_id:
        run = known
    else:
        run = await _run(s, parsed.run_id, raw)
    logged = await _model_logged_by_run(s, run, parsed.path.posix) if parsed.path.parts else None
    if logged is not None:
        if model_id is not None and model_id != logged.info.model_id:
            raise InvalidSource(raw, f"model_id '{model_id}' does not match the source")
        location = _root(logged.info.artifact_uri, raw, f"logged model {logged.info.model_id}")
        return ResolvedSource(
            parsed.canonical, location.to_uri(), parsed.run_id, logged.info.model_id
        )
    if model_id is not None:
        model = await _logged_model(s, model_id, raw)
        if model.info.source_run_id and model.info.source_run_id != parsed.run_id:
            raise InvalidSource(raw, f"logged model '{model_id}' was not logged by this run")
    root = _root(run.info.artifact_uri, raw, f"run {parsed.run_id}")
    location = root.joinpath(parsed.path)
    return ResolvedSource(parsed.canonical, location.to_uri(), parsed.run_id, model_id)


async def _resolve_artifacts(
    s: AsyncSession,
    raw: str,
    parsed: ArtifactSource,
    run_id: str | None,
    model_id: str | None,
) -> ResolvedSource:
    """mlflow-artifacts:/…: only inside the artifact root of the run or logged model given."""
    roots: list[ArtifactPath] = []
    if model_id is not None:
        model = await _logged_model(s, model_id, raw)
        roots.append(_root(model.info.artifact_uri, raw, f"logged model {model_id}"))
        if run_id is not None and model.info.source_run_id and run_id != model.info.source_run_id:
            raise InvalidSource(raw, f"run_id '{run_id}' is not the run that logged this model")
        run_id = run_id or model.info.source_run_id or None
    if run_id is not None:
        run = await _run(s, run_id, raw)
        roots.append(_root(run.info.artifact_uri, raw, f"run {run_id}"))
    if not roots:
        raise InvalidSource(
            raw, "an mlflow-artifacts:/ source needs the run_id or model_id whose files it names"
        )
    if not any(parsed.path.is_relative_to(root) for root in roots):
        raise InvalidSource(raw, "it is outside the artifact root of its run and logged model")
    return ResolvedSource(parsed.canonical, parsed.path.to_uri(), run_id, model_id)
