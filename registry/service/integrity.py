"""Version integrity: frozen copies taken at registration, resolve and verify.

- **Freeze.** :func:`freeze_version_files` copies every file under a version's source location
  into the registry's frozen area (``registry.artifacts.freeze``) and hashes the copy
  (``registry.artifacts.manifest`` documents the manifest and digest format). The version's
  ``storage_location``/``artifact_root`` then name the frozen copy, so ``models:/`` URIs,
  ``get-download-uri``, resolve, the get-artifact routes and ``mlgate verify`` all read bytes
  that no client request can change. The API freezes *between* a read transaction that checks
  the create request and the write transaction that creates the version, so copying a
  multi-GiB model never holds the database write lock (on SQLite, every writer's).
- **Immutability.** The frozen area is never writable through the artifact proxy.
  :func:`check_artifact_writable` is the proxy's write guard: besides the frozen area it
  refuses (403 PERMISSION_DENIED) a PUT, multipart upload or DELETE at, inside or above the
  ``artifact_root`` of a version registered before frozen copies existed, whose files still
  live in the run's folder (those keep being served from there, guarded as before; no
  back-fill copies them).
- **Resolve and verify.** :func:`resolve_model_uri` answers a ``models:/`` URI with the version,
  its locations, digest and files; :func:`verify_fingerprint` re-reads the stored bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from registry import store
from registry.artifacts.external import ExternalSources, freeze_external
from registry.artifacts.freeze import freeze_tree, tree_root_of
from registry.artifacts.manifest import (
    MAX_MANIFEST_FILES,
    FileCheck,
    ManifestEntry,
    compare_manifests,
    fingerprint_tree,
    manifest_digest,
)
from registry.artifacts.paths import ArtifactPath, in_frozen_area, parse_artifact_uri
from registry.artifacts.storage.base import ArtifactStorage
from registry.errors import AliasNotFound, FrozenAreaReadOnly, VersionFilesImmutable
from registry.schemas import (
    ManifestFileOut,
    ModelVersionFilesOut,
    ResolvedModelVersionOut,
    Version,
)
from registry.service.history import LivePointer, parse_pointer
from registry.service.lookups import find_model, find_version, page_fingerprint
from registry.uris import ModelVersionUri, parse_model_uri
from registry.validation import LATEST_ALIAS, validate_max_results
from tracking.core.db import dialect_name
from tracking.core.driver import session_rows
from tracking.core.errors import ResourceNotFound
from tracking.core.object_uris import is_s3_uri
from tracking.core.wire import decode_page_token, encode_page_token

DEFAULT_FILES_PAGE = 1000


# --- fingerprints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionFingerprint:
    """The frozen copy of the files found at ``location`` (the source's ``mlflow-artifacts:/``
    URI): where the copy is (``frozen_root``) and its files, sorted by path."""

    location: str
    files: tuple[ManifestEntry, ...]
    frozen_root: ArtifactPath
    # What the version serves: the root, or the one file in it when the source was a file.
    frozen_location: ArtifactPath

    @property
    def digest(self) -> str | None:
        return manifest_digest(self.files)


async def freeze_version_files(
    storage: ArtifactStorage, location: str, external: ExternalSources | None = None
) -> VersionFingerprint:
    """Copy and hash every file under ``location`` into the frozen area.

    ``location`` is an ``mlflow-artifacts:/`` URI, or an allow-listed ``s3://`` folder outside
    the store (read through ``external``). No database access: call it outside transactions.
    A failed or abandoned registration leaves at most a frozen tree that no version references
    (content-addressed, harmless).
    """
    if is_s3_uri(location):
        tree = await freeze_external(storage, external or ExternalSources(), location)
    else:
        tree = await freeze_tree(storage, parse_artifact_uri(location))
    return VersionFingerprint(location, tree.files, tree.root, tree.location)


# --- the artifact write guard --------------------------------------------------------------------


async def check_artifact_writable(s: AsyncSession, path: ArtifactPath) -> None:
    """Refuse a write or delete at ``path`` if a registered version's files are at, in or under it.

    The guard does not know whether it sees a write or a delete, so both directions are always
    checked: writing a file *above* a root changes nothing under it, but a refusal there costs
    nothing either.
    """
    if in_frozen_area(path):
        raise FrozenAreaReadOnly(path.posix)
    found = await store.version_protecting(s, path)
    if found is not None:
        raise VersionFilesImmutable(
            path.posix or "/", found.name, int(found.version), found.artifact_root
        )


# --- resolve -----------------------------------------------------------------------------------


async def find_by_uri(
    s: AsyncSession, uri: ModelVersionUri, *, unknown_alias_invalid: bool = False
) -> store.VersionBundle:
    """The version a parsed URI names. Every miss is RESOURCE_DOES_NOT_EXIST (404).

    An unknown alias is a 404 here, unlike MLflow's alias API (400): on mlgate's own API a
    URI that names nothing is "not found", whichever part of it misses. MLflow's endpoints
    (a ``models:/name@alias`` version source) pass ``unknown_alias_invalid`` for its 400.
    """
    model = await find_model(s, uri.name)
    if uri.version is not None:
        found = await store.load_versions(s, [(await find_version(s, model, uri.version)).id])
    elif uri.stage is not None:
        found = await store.load_versions(s, store.latest_versions_select([model.id], [uri.stage]))
        if not found:
            raise ResourceNotFound(f"Model '{model.name}' has no version in stage '{uri.stage}'.")
    elif uri.alias is not None and uri.alias.lower() != LATEST_ALIAS:
        found = await store.load_versions(s, store.alias_target_select(model.id, uri.alias))
        if not found and unknown_alias_invalid:
            raise AliasNotFound(model.name, uri.alias)
        if not found:
            raise ResourceNotFound(
                f"Registered model alias {uri.alias} not found for model {model.name}."
            )
    else:
        found = await store.load_versions(s, store.highest_version_select(model.id))
        if not found:
            raise ResourceNotFound(f"Model '{model.name}' has no versions.")
    return found[0]


def _files_out(rows: list[ManifestEntry]) -> list[ManifestFileOut]:
    return [ManifestFileOut(e.path, e.size, e.sha256) for e in rows]


async def _entries(s: AsyncSession, version_pk: int, **page: int) -> list[ManifestEntry]:
    rows = await store.version_files(s, version_pk, **page)
    return [ManifestEntry(r.path, int(r.size), r.sha256) for r in rows]


async def resolve_model_uri(s: AsyncSession, uri: str | None) -> ResolvedModelVersionOut:
    """What a ``models:/`` URI names now: version, locations, digest and every file."""
    bundle = await find_by_uri(s, parse_model_uri(uri))
    r = bundle.row
    return ResolvedModelVersionOut(
        name=r.model_name,
        version=str(r.version),
        current_stage=r.current_stage,
        aliases=list(bundle.aliases),
        run_id=r.run_id,
        source=r.source,
        download_uri=r.storage_location,
        artifact_url=parse_artifact_uri(r.storage_location).to_http_path(),
        digest=r.manifest_digest,
        files=_files_out(await _entries(s, r.id)),
    )


async def model_version_files(
    s: AsyncSession,
    name: str | None,
    version: Version | None,
    max_results: int | None = None,
    page_token: str | None = None,
) -> ModelVersionFilesOut:
    """A version's recorded files, in path order, a page at a time."""
    model = await find_model(s, name)
    row = await find_version(s, model, version)
    limit = validate_max_results(max_results, DEFAULT_FILES_PAGE, MAX_MANIFEST_FILES)
    fingerprint = page_fingerprint("files", row.id)
    offset = decode_page_token(page_token, fingerprint)
    entries = await _entries(s, row.id, offset=offset, limit=limit + 1)
    token = encode_page_token(offset + limit, fingerprint) if len(entries) > limit else None
    return ModelVersionFilesOut(
        name=model.name,
        version=str(row.version),
        digest=row.manifest_digest,
        files=_files_out(entries[:limit]),
        next_page_token=token,
    )


# --- verify ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedFingerprint:
    """What the registry recorded for a version when it was created."""

    name: str
    version: int
    location: str
    digest: str | None
    files: tuple[ManifestEntry, ...]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    recorded: RecordedFingerprint
    checks: list[FileCheck]
    # The digest of the bytes stored now (None: no files).
    actual_digest: str | None

    @property
    def rows_match_digest(self) -> bool:
        """The recorded file rows still produce the recorded digest (the database is intact)."""
        return manifest_digest(self.recorded.files) == self.recorded.digest

    @property
    def ok(self) -> bool:
        return (
            self.rows_match_digest
            and self.actual_digest == self.recorded.digest
            and all(c.status == "OK" for c in self.checks)
        )


async def recorded_fingerprint(s: AsyncSession, uri: str | None) -> RecordedFingerprint:
    """The recorded manifest of the version a ``models:/`` URI names (404 when it names none)."""
    bundle = await find_by_uri(s, parse_model_uri(uri))
    r = bundle.row
    files = await _entries(s, r.id)
    return RecordedFingerprint(
        r.model_name, int(r.version), r.storage_location, r.manifest_digest, tuple(files)
    )


async def moved_version(
    s: AsyncSession, name: str, version: int, pointer: str
) -> tuple[RecordedFingerprint, LivePointer]:
    """What :func:`recorded_fingerprint` and :func:`~registry.service.history.live_pointer`
    answer for a version a move just put on ``pointer``, in two reads instead of ten (the
    attestation of a gated move, in the move's transaction). The pointer's digest is given
    only when this version holds it (None when another does)."""
    kind, canonical = parse_pointer(pointer)
    files: list[ManifestEntry]
    if dialect_name(s) == "postgresql":
        # One read (the version with its files), on the transaction's own connection.
        await s.flush()
        row = await store.moved_version_with_files(
            await session_rows(s), name, version, kind, canonical
        )
        if row is not None:
            files = [
                ManifestEntry(path, int(size), sha256)
                for path, size, sha256 in zip(
                    row.paths or (), row.sizes or (), row.sha256s or (), strict=True
                )
            ]
    else:
        row = await store.moved_version(s, name, version, kind, canonical)
        if row is not None:
            files = await _entries(s, row.id)
    if row is None:
        await find_version(s, await find_model(s, name), version)  # names what is missing
        raise ResourceNotFound(f"Model '{name}' has no version {version}.")  # deleted since
    recorded = RecordedFingerprint(
        row.name, int(row.version), row.storage_location, row.manifest_digest, tuple(files)
    )
    holder = None if row.holder is None else int(row.holder)
    digest = row.manifest_digest if holder == int(row.version) else None
    event_id = None if row.event_id is None else int(row.event_id)
    return recorded, LivePointer(row.name, holder, digest, event_id)


async def verify_fingerprint(
    storage: ArtifactStorage, recorded: RecordedFingerprint
) -> VerifyReport:
    """Re-read every stored byte under the version's location and compare with the record."""
    actual = await fingerprint_tree(storage, tree_root_of(parse_artifact_uri(recorded.location)))
    return VerifyReport(
        recorded, compare_manifests(recorded.files, actual), manifest_digest(actual)
    )
