"""External model sources: an allow-listed S3 folder copied into the frozen area at registration.

A model trained elsewhere (``s3://bucket/path``) is registered by copying every object under
``path/`` into a staging folder of mlgate's own store, hashing the bytes as they are written,
and publishing the staged tree under its manifest digest, exactly like a run's files
(``registry.artifacts.freeze``). Each object is read pinned to the ETag it was listed with, so
an object replaced mid-copy fails the registration instead of mixing two versions. After that
the external bucket is never read again: deleting or overwriting its objects changes nothing.

Objects are read with the S3 client settings of mlgate's own store (``MLGATE_S3_ENDPOINT_URL``
and boto3's credential chain): a bucket of another account must be readable by the server's
credentials. Object keys become artifact paths through the one canonicaliser; a key that is
not a plain relative path (``..``, empty segments ...) refuses the whole registration.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
from anyio import to_thread
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from registry.artifacts.freeze import FrozenTree, frozen_root
from registry.artifacts.manifest import MAX_MANIFEST_FILES, ManifestEntry, manifest_digest
from registry.artifacts.paths import FROZEN_AREA, ArtifactPath, parse_artifact_path
from registry.artifacts.storage.base import IO_CHUNK_BYTES, ArtifactStorage, StorageUnavailable
from tracking.core.errors import InvalidParameter, InvalidState, MlflowError
from tracking.core.object_uris import EXTERNAL_SOURCES_SETTING, S3Location, parse_s3_uri

EXTERNAL_STATE_KEY = "external_sources"
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId"}
_PRECONDITION_FAILED = {"PreconditionFailed", "412"}


@dataclass(frozen=True, slots=True)
class ExternalObject:
    key: str
    relative: ArtifactPath
    size: int
    etag: str


@dataclass
class ExternalSources:
    """The operator's allow-list (parsed once at start) and the client that reads it."""

    prefixes: tuple[S3Location, ...] = ()
    endpoint_url: str | None = None
    client: Any = None
    _made: Any = field(default=None, repr=False)

    def _s3(self) -> Any:
        if self.client is not None:
            return self.client
        if self._made is None:
            self._made = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 5},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._made

    async def _call(self, source: str, func: Any, **kw: Any) -> Any:
        try:
            return await to_thread.run_sync(lambda: func(**kw))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _PRECONDITION_FAILED:
                raise InvalidState(
                    f"An object under {source} changed while it was being copied; retry."
                ) from None
            if code in _DENIED:
                raise InvalidParameter(
                    f"Cannot read external source {source}: access denied to the server's "
                    f"credentials (sources listed in {EXTERNAL_SOURCES_SETTING} are read with "
                    "them)."
                ) from None
            raise InvalidParameter(f"Cannot read external source {source}: {code}.") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"External source {source} is unreachable: {exc}") from None

    async def list_objects(self, location: S3Location, max_files: int) -> list[ExternalObject]:
        """Every object under ``location``'s folder, as relative artifact paths."""
        source, prefix = location.uri, f"{location.key}/"
        found: list[ExternalObject] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": location.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            page = await self._call(source, self._s3().list_objects_v2, **kw)
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if key.endswith("/"):  # a "folder" marker object holds no file
                    continue
                try:
                    relative = parse_artifact_path(key[len(prefix) :])
                except MlflowError:
                    raise InvalidParameter(
                        f"Invalid model version source {source!r}: object key '{key[:300]}' is "
                        "not a plain relative path."
                    ) from None
                found.append(ExternalObject(key, relative, int(item["Size"]), str(item["ETag"])))
                if len(found) > max_files:
                    raise InvalidParameter(
                        f"External source {source} holds more than {max_files} files."
                    )
            if not page.get("IsTruncated"):
                return found
            token = page.get("NextContinuationToken")

    async def read(self, location: S3Location, obj: ExternalObject) -> AsyncIterator[bytes]:
        """The object's bytes, pinned to the ETag it was listed with."""
        got = await self._call(
            location.uri,
            self._s3().get_object,
            Bucket=location.bucket,
            Key=obj.key,
            IfMatch=obj.etag,
        )
        body = got["Body"]
        try:
            while True:
                chunk = await to_thread.run_sync(body.read, IO_CHUNK_BYTES)
                if not chunk:
                    return
                yield chunk
        finally:
            await to_thread.run_sync(body.close)

    def close(self) -> None:
        if self._made is not None:
            self._made.close()


async def freeze_external(
    storage: ArtifactStorage,
    sources: ExternalSources,
    uri: str,
    *,
    max_files: int = MAX_MANIFEST_FILES,
) -> FrozenTree:
    """Copy every object under the (already allow-listed) ``uri`` into the frozen area."""
    location = parse_s3_uri(uri)
    objects = await sources.list_objects(location, max_files)
    if not objects:
        raise InvalidParameter(f"Invalid model version source {uri!r}: it holds no files.")
    staging = ArtifactPath((FROZEN_AREA, "staging", secrets.token_hex(16)))
    entries: list[ManifestEntry] = []
    try:
        for obj in objects:
            entries.append(await _copy_one(storage, sources, location, obj, staging))
        ordered: Sequence[ManifestEntry] = sorted(entries, key=lambda e: e.path.encode("utf-8"))
        digest = manifest_digest(ordered)
        root = frozen_root(digest)
        await storage.publish_tree(staging, root, {e.path: (e.size, e.sha256) for e in ordered})
    finally:
        with contextlib.suppress(MlflowError, OSError):
            await storage.delete(staging)
    return FrozenTree(root, tuple(ordered))


async def _copy_one(
    storage: ArtifactStorage,
    sources: ExternalSources,
    location: S3Location,
    obj: ExternalObject,
    staging: ArtifactPath,
) -> ManifestEntry:
    digest = hashlib.sha256()

    async def hashed() -> AsyncIterator[bytes]:
        async for chunk in sources.read(location, obj):
            digest.update(chunk)
            yield chunk

    size = await storage.put(staging.joinpath(obj.relative), hashed())
    return ManifestEntry(obj.relative.posix, size, digest.hexdigest())
