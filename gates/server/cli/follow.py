"""``mlgate follow``: the reference loader that keeps a serving process on a pointer.

It long-polls ``GET /api/2.0/mlgate/watch`` for ``models:/name/Stage`` or ``models:/name@alias``;
when the pointer moves it downloads the new version's files through the server, checks every
file's sha256 and the manifest digest against what the registry recorded, swaps them into
place, restarts the command, and reports the digest it now runs to
``POST /api/2.0/mlgate/deployments/report``. Files that fail the check are never run. It
reports again after every watch answer (a heartbeat), so the server can tell a live replica
from one that went away.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from gates.server.cli.family import Family, Subcommands
from registry.artifacts.manifest import ManifestEntry, manifest_digest
from registry.uris import ModelVersionUri, parse_model_uri
from tracking.core.settings import Settings

WATCH_PATH = "/api/2.0/mlgate/watch"
RESOLVE_PATH = "/api/2.0/mlgate/models/resolve"
REPORT_PATH = "/api/2.0/mlgate/deployments/report"
# Versions kept on disk: the one running and the one before it (a quick manual rollback).
KEEP_VERSIONS = 2
_CHUNK = 1 << 20


class FollowError(Exception):
    """A version that cannot be run: its files did not match what the registry recorded."""


def add_commands(sub: Subcommands) -> None:
    follow = sub.add_parser(
        "follow",
        help="keep a command running the version a stage or alias points at",
        description=__doc__,
    )
    follow.add_argument("uri", help="models:/<name>/<stage> or models:/<name>@<alias>")
    follow.add_argument(
        "--exec",
        dest="exec_command",
        help="command to (re)start on every move; {path}, {version} and {digest} are replaced "
        "(split like a shell would, run without one)",
    )
    follow.add_argument("--dir", default="./mlgate-follow", help="where versions are downloaded")
    follow.add_argument(
        "--deployment", help="deployment name to report under (default: <name>@<alias> or ...)"
    )
    follow.add_argument("--replica-id", help="this replica's id (default: <host>-<pid>)")
    follow.add_argument("--url", help="mlgate server (env MLGATE_URL)")
    follow.add_argument("--timeout", type=float, default=30.0, help="seconds per long-poll")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        uri = parse_model_uri(args.uri)
    except Exception as exc:
        print(f"mlgate: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    if uri.stage is None and uri.alias is None:
        print(
            "mlgate: follow needs a stage or an alias (models:/name/Stage, @alias)", file=sys.stderr
        )
        return 2
    follower = Follower(
        url=(args.url or settings.url).rstrip("/"),
        uri=uri,
        workdir=Path(args.dir),
        exec_command=args.exec_command,
        deployment=args.deployment or str(uri).removeprefix("models:/"),
        replica_id=args.replica_id or f"{socket.gethostname()}-{os.getpid()}",
        credentials=_credentials(settings),
        poll_timeout=args.timeout,
    )
    stop = threading.Event()
    # SIGTERM ends a long-poll at once (an exception from the handler), then the command goes.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        follower.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        follower.stop_command()
    return 0


def _raise_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _credentials(settings: Settings) -> dict[str, Any]:
    if settings.tracking_token:
        return {"headers": {"Authorization": f"Bearer {settings.tracking_token}"}}
    if settings.tracking_username:
        return {"auth": (settings.tracking_username, settings.tracking_password)}
    return {}


@dataclass
class Running:
    version: str | None
    digest: str | None
    path: Path | None


class Follower:
    """The watch, download, verify, restart and report loop (usable without the CLI)."""

    def __init__(
        self,
        *,
        url: str,
        uri: ModelVersionUri,
        workdir: Path,
        exec_command: str | None,
        deployment: str,
        replica_id: str,
        credentials: dict[str, Any] | None = None,
        poll_timeout: float = 30.0,
        log: Any = None,
    ) -> None:
        self.url = url
        self.uri = uri
        self.workdir = workdir
        self.exec_command = exec_command
        self.deployment = deployment
        self.replica_id = replica_id
        self.poll_timeout = poll_timeout
        self.http = httpx.Client(base_url=url, timeout=poll_timeout + 30, **(credentials or {}))
        self.running = Running(None, None, None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = log or (lambda message: print(f"mlgate follow: {message}", file=sys.stderr))

    # --- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        etag: str | None = None
        backoff = 1.0
        while not stop.is_set():
            try:
                etag = self.step(etag)
                backoff = 1.0
            except (httpx.HTTPError, FollowError, OSError) as exc:
                self.log(f"{type(exc).__name__}: {exc}; retrying in {backoff:g} s")
                if isinstance(exc, FollowError):
                    # Still running the previous version: say so, so the server sees the drift.
                    with contextlib.suppress(httpx.HTTPError):
                        self.report()
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def step(self, etag: str | None) -> str | None:
        """One watch round: switch if the pointer moved, then report; returns the new ETag."""
        answer = self.watch(etag)
        if answer is not None:
            if answer["digest"] != self.running.digest or answer["version"] is None:
                self.switch(answer)
            else:
                # Another version with the very same bytes: nothing to restart.
                self.running.version = str(answer["version"])
            etag = str(answer["etag"])
        self.report()
        return etag

    def watch(self, etag: str | None) -> dict[str, Any] | None:
        params: dict[str, Any] = {"name": self.uri.name, "timeout": self.poll_timeout}
        params["stage" if self.uri.stage else "alias"] = self.uri.stage or self.uri.alias
        headers = {"If-None-Match": etag} if etag else {}
        r = self.http.get(WATCH_PATH, params=params, headers=headers)
        if r.status_code == 304:
            return None
        if r.status_code == 429:
            time.sleep(float(r.headers.get("Retry-After", "1")))
            return None
        r.raise_for_status()
        found: dict[str, Any] = r.json()
        return found

    def switch(self, answer: dict[str, Any]) -> None:
        if answer["version"] is None:
            self.log(f"{self.uri} points at no version; keeping what runs")
            return
        path = self.download(str(answer["version"]), answer.get("digest"))
        self.restart(path, str(answer["version"]), str(answer["digest"]))
        self.running = Running(str(answer["version"]), str(answer["digest"]), path)
        self.prune()
        self.log(f"now running version {answer['version']} ({answer['digest']}) from {path}")

    def report(self) -> None:
        body: dict[str, Any] = {
            "deployment": self.deployment,
            "name": self.uri.name,
            "replica_id": self.replica_id,
            "version": self.running.version,
            "digest": self.running.digest,
        }
        body["stage" if self.uri.stage else "alias"] = self.uri.stage or self.uri.alias
        self.http.post(REPORT_PATH, json=body).raise_for_status()

    # --- files ----------------------------------------------------------------------------------

    def download(self, version: str, digest: str | None) -> Path:
        """Fetch a version's files into ``workdir/v<version>-<digest>``, verified, atomically."""
        if not digest:
            raise FollowError(f"version {version} has no recorded digest; refusing to run it")
        final = self.workdir / f"v{version}-{digest[:16]}"
        if final.is_dir():
            return final
        r = self.http.get(RESOLVE_PATH, params={"uri": f"models:/{self.uri.name}/{version}"})
        r.raise_for_status()
        resolved = r.json()
        if resolved.get("digest") != digest:
            raise FollowError(f"version {version} moved on while it was fetched")
        self.workdir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.workdir))
        try:
            entries = [self._fetch(resolved["artifact_url"], f, staging) for f in resolved["files"]]
            got = manifest_digest(entries)
            if got != digest:
                raise FollowError(f"downloaded files digest to {got}, the registry says {digest}")
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def _fetch(self, artifact_url: str, recorded: dict[str, Any], into: Path) -> ManifestEntry:
        relative = _safe_relative(str(recorded["path"]))
        target = into.joinpath(*relative.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        sha, size = hashlib.sha256(), 0
        url = f"{artifact_url}/{quote(relative)}"
        with self.http.stream("GET", url) as r, target.open("wb") as out:
            r.raise_for_status()
            for chunk in r.iter_bytes(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
                out.write(chunk)
        entry = ManifestEntry(relative, size, sha.hexdigest())
        if (entry.size, entry.sha256) != (int(recorded["size"]), recorded["sha256"]):
            raise FollowError(f"{relative}: sha256 {entry.sha256} differs from the registry's")
        return entry

    def prune(self) -> None:
        kept = sorted(
            (p for p in self.workdir.iterdir() if p.is_dir() and p.name.startswith("v")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in kept[KEEP_VERSIONS:]:
            if old != self.running.path:
                shutil.rmtree(old, ignore_errors=True)

    # --- the served command ---------------------------------------------------------------------

    def restart(self, path: Path, version: str, digest: str) -> None:
        self.stop_command()
        if not self.exec_command:
            return
        values = {"path": str(path), "version": version, "digest": digest}
        argv = []
        for part in shlex.split(self.exec_command):
            for key, value in values.items():
                part = part.replace("{" + key + "}", value)
            argv.append(part)
        # Its own process group, so a restart stops what it started too (a shell's children).
        self.process = subprocess.Popen(argv, start_new_session=True)

    def stop_command(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _safe_relative(path: str) -> str:
    """A server-sent file path, refused unless it stays inside the download folder."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise FollowError(f"refusing the file path {path!r}")
    return path


# The loop reports its own failures (it must keep the old version running), so unguarded.
FAMILY = Family(commands=("follow",), add_commands=add_commands, run=run, guarded=False)
