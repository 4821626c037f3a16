"""Artifacts in an S3 bucket (or an S3-compatible store) through boto3, in worker threads."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import boto3
from anyio import to_thread
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from registry.artifacts.paths import FROZEN_AREA, ArtifactPath
from registry.artifacts.storage.base import (
    IO_CHUNK_BYTES,
    MAX_LIST_ENTRIES,
    MAX_PART_BYTES,
    MAX_PARTS,
    ArtifactEntry,
    ArtifactReader,
    ArtifactStat,
    StorageUnavailable,
    UploadedPart,
    check_part_number,
    check_parts,
)
from tracking.core.errors import InvalidParameter, InvalidState, MlflowError, ResourceNotFound

T = TypeVar("T")

# Streamed uploads are cut into parts of this size, so a request holds at most about two parts
# in memory however large the body is. S3 allows 10,000 parts: 8 MiB parts cover 32 GiB with
# the first 4,000, and the rest grow to 32 MiB (about 220 GiB in all).
PART_BYTES = 8 * 1024 * 1024
LARGE_PART_BYTES = 32 * 1024 * 1024
LARGE_PARTS_FROM = 4_000
# Parts received through the proxy are spooled to disk beyond this size before going to S3.
SPOOL_BYTES = 8 * 1024 * 1024

# copy_object copies at most 5 GiB; a larger object is copied server side part by part, with
# parts of this size (the same layout for every copy, so two copies of one object have the same
# multipart ETag and can be compared by it).
MAX_COPY_OBJECT_BYTES = 5 * 1024**3
COPY_PART_BYTES = 512 * 1024**2
# A source replaced while its parts were being copied is copied again from the start.
SNAPSHOT_ATTEMPTS = 3

_PRECONDITION_FAILED = {"PreconditionFailed", "412"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_BAD_REQUEST = {
    "InvalidPart",
    "InvalidPartOrder",
    "EntityTooSmall",
    "EntityTooLarge",
    "KeyTooLongError",
    "InvalidArgument",
    "InvalidRequest",
}


def part_size(part_number: int) -> int:
    return PART_BYTES if part_number <= LARGE_PARTS_FROM else LARGE_PART_BYTES


class S3Storage:
    """Keys are ``<prefix>/<artifact path>``; "directories" are ``/``-delimited key prefixes."""

    supports_multipart = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: Any = None,
        max_copy_object_bytes: int = MAX_COPY_OBJECT_BYTES,
        copy_part_bytes: int = COPY_PART_BYTES,
    ) -> None:
        self.bucket = bucket
        self.max_copy_object_bytes = max_copy_object_bytes
        self.copy_part_bytes = copy_part_bytes
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        # Region and credentials come from boto3's usual chain (AWS_* variables, profiles,
        # instance roles). Checksums only when required: the newer default (a CRC on every
        # request) is rejected by several S3-compatible stores.
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                max_pool_connections=50,
                retries={"mode": "standard", "max_attempts": 5},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def _key(self, path: ArtifactPath) -> str:
        _require_canonical(path)
        return f"{self.prefix}{path.posix}"

    def _dir_prefix(self, path: ArtifactPath) -> str:
        _require_canonical(path)
        return self.prefix if path.is_root else f"{self._key(path)}/"

    async def _call(self, path: ArtifactPath, func: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run one blocking boto3 call in a worker thread, mapping its errors to MLflow's."""
        try:
            return await to_thread.run_sync(lambda: func(*args, **kw))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _PRECONDITION_FAILED:
                raise _SourceChanged from None
            raise _translate(exc, path) from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"Artifact storage is unavailable: {exc}") from None

    # --- single-shot upload ---------------------------------------------------------------

    async def put(self, path: ArtifactPath, chunks: AsyncIterable[bytes]) -> int:
        key = self._key(path)
        if path.is_root:
            raise InvalidParameter("An artifact upload needs a file path.")
        upload = _PartUpload(self, path, key)
        try:
            size, last = await _cut_into_parts(chunks, upload.send)
            if upload.upload_id is None:
                # Small body: one PUT, no multipart bookkeeping.
                await self._call(
                    path, self._client.put_object, Bucket=self.bucket, Key=key, Body=last
                )
                return size
            if last:
                await upload.send(last)
            await upload.complete()
            return size
        except BaseException:
            if upload.upload_id is not None:
                # Abandoned parts are billed and invisible: always abort a failed upload.
                await to_thread.run_sync(self._abort_quietly, key, upload.upload_id)
            raise

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    # --- reads ----------------------------------------------------------------------------

    async def open(self, path: ArtifactPath) -> ArtifactReader:
        key = self._key(path)
        if path.is_root:
            raise ResourceNotFound("The artifact store root is not a file.")
        result = await self._call(path, self._client.get_object, Bucket=self.bucket, Key=key)
        body = result["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                try:
                    data = await to_thread.run_sync(body.read, IO_CHUNK_BYTES)
                except (BotoCoreError, OSError) as exc:
                    raise StorageUnavailable(f"Artifact storage read failed: {exc}") from None
                if not data:
                    return
                yield data

        async def close() -> None:
            await to_thread.run_sync(body.close)

        return ArtifactReader(int(result["ContentLength"]), chunks(), close)

    async def list(self, path: ArtifactPath) -> list[ArtifactEntry]:
        prefix = self._dir_prefix(path)

        def scan() -> list[ArtifactEntry]:
            entries: dict[tuple[str, bool], ArtifactEntry] = {}
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", ()):
                    name = common["Prefix"][len(prefix) :].rstrip("/")
                    if _plain_name(name):
                        entries[(name, True)] = ArtifactEntry(name, True)
                for obj in page.get("Contents", ()):
                    name = obj["Key"][len(prefix) :]
                    if _plain_name(name):  # skips the "dir/" marker object itself
                        entries[(name, False)] = ArtifactEntry(name, False, int(obj["Size"]))
                if len(entries) > MAX_LIST_ENTRIES:
                    raise InvalidParameter(
                        f"The directory has more than {MAX_LIST_ENTRIES} entries; "
                        "list a subdirectory."
                    )
            return sorted(entries.values(), key=lambda e: (e.name, not e.is_dir))

        return await self._call(path, scan)

    async def stat(self, path: ArtifactPath) -> ArtifactStat | None:
        _require_canonical(path)
        if not path.is_root:
            try:
                head = await self._call(
                    path, self._client.head_object, Bucket=self.bucket, Key=self._key(path)
                )
                return ArtifactStat(is_dir=False, size=int(head["ContentLength"]))
            except ResourceNotFound:
                pass
        listed = await self._call(
            path,
            self._client.list_objects_v2,
            Bucket=self.bucket,
            Prefix=self._dir_prefix(path),
            MaxKeys=1,
        )
        return ArtifactStat(is_dir=True) if listed.get("KeyCount", 0) else None

    async def delete(self, path: ArtifactPath) -> None:
        key = self._key(path)
        if path.is_root:
            raise InvalidParameter("Refusing to delete the whole artifact store.")
        prefix = self._dir_prefix(path)

        def remove() -> None:
            c = self._client
            # The path may be a file, a "directory" prefix, or (S3 allows it) both.
            c.delete_object(Bucket=self.bucket, Key=key)
            paginator = c.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
                if keys:  # a page holds at most 1,000 keys, delete_objects' limit
                    out = c.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                    )
                    if out.get("Errors"):
                        first = out["Errors"][0]
                        raise StorageUnavailable(
                            f"Could not delete {first.get('Key')}: {first.get('Message')}"
                        )

        await self._call(path, remove)

    # --- multipart ------------------------------------------------------------------------

    async def create_multipart(self, path: ArtifactPath) -> str:
        key = self._key(path)
        if path.is_root:
            raise InvalidParameter("A multipart upload needs a file path.")
        created = await self._call(
            path, self._client.create_multipart_upload, Bucket=self.bucket, Key=key
        )
        return str(created["UploadId"])

    async def upload_part(
        self, path: ArtifactPath, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        check_part_number(part_number)
        # S3 needs the part's length up front; spool it (memory up to 8 MiB, then a temp file).
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        try:
            size = 0
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if size > MAX_PART_BYTES:
                    raise InvalidParameter(
                        f"A part must not be larger than {MAX_PART_BYTES} bytes."
                    )
                if len(buffer) >= IO_CHUNK_BYTES:
                    await to_thread.run_sync(spool.write, buffer)
                    buffer = bytearray()
            if buffer:
                await to_thread.run_sync(spool.write, buffer)
            spool.seek(0)
            result = await self._call(
                path,
                self._client.upload_part,
                Bucket=self.bucket,
                Key=self._key(path),
                UploadId=upload_id,
                PartNumber=part_number,
                Body=spool,
                ContentLength=size,
            )
        finally:
            spool.close()
        return str(result["ETag"])

    async def complete_multipart(
        self, path: ArtifactPath, upload_id: str, parts: Sequence[UploadedPart]
    ) -> None:
        check_parts(parts)
        await self._call(
            path,
            self._client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=self._key(path),
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": p.part_number, "ETag": p.etag} for p in parts]
            },
        )

    async def abort_multipart(self, path: ArtifactPath, upload_id: str) -> None:
        await self._call(
            path,
            self._client.abort_multipart_upload,
            Bucket=self.bucket,
            Key=self._key(path),
            UploadId=upload_id,
        )

    # --- frozen copies (registry.artifacts.freeze) -----------------------------------------

    def _copy_key(self, src_key: str, dst_key: str, size: int, etag: str) -> None:
        """Server-side copy of exactly the object version ``etag`` names (blocking).

        ``CopySourceIfMatch`` on every request: a source replaced mid-copy fails the copy
        (412) instead of producing a mix of two objects.
        """
        c = self._client
        source = {"Bucket": self.bucket, "Key": src_key}
        if size <= self.max_copy_object_bytes:
            c.copy_object(
                Bucket=self.bucket, Key=dst_key, CopySource=source, CopySourceIfMatch=etag
            )
            return
        upload_id = c.create_multipart_upload(Bucket=self.bucket, Key=dst_key)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, self.copy_part_bytes), start=1):
                end = min(start + self.copy_part_bytes, size) - 1
                out = c.upload_part_copy(
                    Bucket=self.bucket,
                    Key=dst_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceIfMatch=etag,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": out["CopyPartResult"]["ETag"]})
            c.complete_multipart_upload(
                Bucket=self.bucket,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self._abort_quietly(dst_key, upload_id)
            raise

    async def snapshot(self, source: ArtifactPath, target: ArtifactPath) -> tuple[int, str]:
        src_key, dst_key = self._key(source), self._key(target)
        if source.is_root or target.is_root:
            raise InvalidParameter("A snapshot copies one file.")
        for _ in range(SNAPSHOT_ATTEMPTS):
            head = await self._call(
                source, self._client.head_object, Bucket=self.bucket, Key=src_key
            )
            try:
                await self._call(
                    source,
                    self._copy_key,
                    src_key,
                    dst_key,
                    int(head["ContentLength"]),
                    str(head["ETag"]),
                )
                break
            except _SourceChanged:
                continue
        else:
            raise InvalidState(f"'{source}' kept changing while it was being copied; retry.")
        # The digest is taken from the copy, which no client can write: what is stored is
        # exactly what was hashed.
        return await self._hash(target)

    async def _hash(self, path: ArtifactPath) -> tuple[int, str]:
        reader = await self.open(path)
        digest = hashlib.sha256()
        size = 0
        async for chunk in reader:
            size += len(chunk)
            await to_thread.run_sync(digest.update, chunk)
        return size, digest.hexdigest()

    async def publish_tree(
        self, staged: ArtifactPath, final: ArtifactPath, expected: Mapping[str, tuple[int, str]]
    ) -> None:
        staged_prefix, final_prefix = self._dir_prefix(staged), self._dir_prefix(final)

        def objects_under(prefix: str) -> list[tuple[str, int, str]]:
            found = []
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", ()):
                    found.append((obj["Key"][len(prefix) :], int(obj["Size"]), obj["ETag"]))
            return found

        objects = await self._call(staged, objects_under, staged_prefix)
        if {rel for rel, _, _ in objects} != set(expected):
            raise StorageUnavailable(f"The staged copy under '{staged}' is incomplete.")
        # The same digest may have been published before (wholly, or in part by a publish that
        # failed midway): an object already there with the staged copy's size and ETag holds
        # the same bytes (the area is content-addressed and no client may write it), so it is
        # not copied and checked again. Any other object there (a wrong size, another ETag,
        # as after a failed check or on stores whose copies get new ETags) is copied over.
        published = {
            (rel, size, etag)
            for rel, size, etag in await self._call(final, objects_under, final_prefix)
        }
        for rel, size, etag in objects:
            if (rel, size, etag) in published:
                continue
            target = final.joinpath(rel)
            try:
                await self._call(
                    target,
                    self._copy_key,
                    f"{staged_prefix}{rel}",
                    f"{final_prefix}{rel}",
                    size,
                    etag,
                )
            except _SourceChanged:
                raise StorageUnavailable(f"The staged copy of '{target}' changed.") from None
            head = await self._call(
                target, self._client.head_object, Bucket=self.bucket, Key=f"{final_prefix}{rel}"
            )
            if int(head["ContentLength"]) != size:
                raise StorageUnavailable(f"The copy of '{target}' has the wrong size.")
            if head["ETag"] != etag and await self._hash(target) != expected[rel]:
                # ETags of copies differ on some stores (SSE-KMS): then re-hash the copy.
                raise StorageUnavailable(f"The copy of '{target}' does not match its digest.")
        await self.delete(staged)

    async def sweep_stale_uploads(self, max_age_seconds: float) -> int:
        """Abort this store's multipart uploads untouched for more than ``max_age_seconds``.

        Incomplete uploads are invisible in listings yet billed for their parts. An upload is
        untouched when it was initiated before the cutoff (S3's own clock, the one its
        AbortIncompleteMultipartUpload lifecycle rule uses) and none of its parts arrived
        after it, so an upload still receiving parts is spared. Only keys under this store's
        prefix are touched; an upload another replica aborted first is skipped.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
        aborted = await self._call(ArtifactPath(()), self._abort_stale_uploads, cutoff)
        return aborted + await self._call(ArtifactPath(()), self._remove_stale_staging, cutoff)

    def _last_part_at(self, key: str, upload_id: str) -> datetime | None:
        newest: datetime | None = None
        for page in self._client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=key, UploadId=upload_id
        ):
            for part in page.get("Parts", ()):
                at = part.get("LastModified")
                if isinstance(at, datetime) and (newest is None or at > newest):
                    newest = at
        return newest

    def _abort_stale_uploads(self, cutoff: datetime) -> int:
        c = self._client
        aborted = 0
        paginator = c.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for upload in page.get("Uploads", ()):
                key, upload_id = upload["Key"], upload["UploadId"]
                initiated = upload.get("Initiated")
                if not isinstance(initiated, datetime) or initiated >= cutoff:
                    continue
                try:
                    newest = self._last_part_at(key, upload_id)
                    if newest is not None and newest >= cutoff:
                        continue
                    c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    aborted += 1
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in _NOT_FOUND:
                        raise
        return aborted

    def _remove_stale_staging(self, cutoff: datetime) -> int:
        # Freezes a killed server left half-made: ``mlgate-frozen/staging/<id>/...``, each
        # removed once nothing in it was written within the age.
        c = self._client
        root = f"{self.prefix}{FROZEN_AREA}/staging/"
        groups: dict[str, tuple[datetime, list[str]]] = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
            for obj in page.get("Contents", ()):
                group = obj["Key"][len(root) :].split("/", 1)[0]
                newest, keys = groups.get(group, (obj["LastModified"], []))
                keys.append(obj["Key"])
                groups[group] = (max(newest, obj["LastModified"]), keys)
        removed = 0
        for newest, keys in groups.values():
            if newest >= cutoff:
                continue
            for start in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                c.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            removed += 1
        return removed

    async def aclose(self) -> None:
        await to_thread.run_sync(self._client.close)


class _PartUpload:
    """A streamed upload's multipart state: begun on its first full part, parts sent so far."""

    def __init__(self, storage: S3Storage, path: ArtifactPath, key: str) -> None:
        self.storage, self.path, self.key = storage, path, key
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    async def send(self, data: bytearray) -> None:
        st, c = self.storage, self.storage._client
        if self.upload_id is None:
            created = await st._call(
                self.path, c.create_multipart_upload, Bucket=st.bucket, Key=self.key
            )
            self.upload_id = created["UploadId"]
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise InvalidParameter("The artifact is too large for one S3 object.")
        result = await st._call(self.path, c.upload_part, Bucket=st.bucket, Key=self.key,
                                UploadId=self.upload_id, PartNumber=number, Body=data)  # fmt: skip
        self.parts.append({"PartNumber": number, "ETag": result["ETag"]})

    async def complete(self) -> None:
        st = self.storage
        await st._call(self.path, st._client.complete_multipart_upload, Bucket=st.bucket,
                       Key=self.key, UploadId=self.upload_id,
                       MultipartUpload={"Parts": self.parts})  # fmt: skip


async def _cut_into_parts(
    chunks: AsyncIterable[bytes], send: Callable[[bytearray], Awaitable[None]]
) -> tuple[int, bytearray]:
    """Fill part-sized buffers from ``chunks``, ``send`` each full one; the size and the rest.

    Each part is filled in place and handed over as is: one part-sized buffer per upload, no
    copies of it.
    """
    size, sent, filled = 0, 0, 0
    part = bytearray(part_size(1))
    async for chunk in chunks:
        size += len(chunk)
        view = memoryview(chunk)
        while view:
            take = min(len(view), len(part) - filled)
            part[filled : filled + take] = view[:take]
            filled += take
            view = view[take:]
            if filled == len(part):
                await send(part)
                sent += 1
                part = bytearray(part_size(sent + 1))
                filled = 0
    del part[filled:]
    return size, part


class _SourceChanged(Exception):
    """The copied object was replaced during the copy (a CopySourceIfMatch precondition)."""


def _require_canonical(path: ArtifactPath) -> None:
    if not isinstance(path, ArtifactPath):  # only the canonical type may reach the bucket
        raise TypeError("storage paths must be ArtifactPath values")


def _plain_name(name: str) -> bool:
    """Show a listed name only if it is one valid segment (a name the API could have written)."""
    try:
        ArtifactPath((name,))
    except InvalidParameter:
        return False
    return True


def _translate(exc: ClientError, path: ArtifactPath) -> MlflowError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or code
    if code in _NOT_FOUND:
        if code == "NoSuchUpload":
            return ResourceNotFound(f"No multipart upload with that id for '{path}'.")
        return ResourceNotFound(f"Artifact '{path}' does not exist.")
    if code in _BAD_REQUEST:
        return InvalidParameter(f"Artifact storage refused '{path}': {message}")
    return StorageUnavailable(f"Artifact storage error ({code}): {message}")
