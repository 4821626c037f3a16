"""``mlgate attest verify``: check a promotion attestation offline against keys and files.

What it checks, in order: a DSSE signature over the in-toto statement made with a trusted key
(given as PEM files, or fetched once from a server's published keys, whose ids are recomputed
here and never taken on trust); that the statement is mlgate's promotion predicate; and that
the files under ``--files`` are exactly the statement's subjects: every subject present with
its sha256, no file missing, none extra, and their manifest digest the predicate's.
Exit 0 verified, 1 not verified, 2 a usage error (unreadable envelope, key or folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from gates.attestations.dsse import (
    PREDICATE_TYPE,
    EnvelopeError,
    VerifyingKey,
    load_public_pem,
    verify_envelope,
)
from gates.server.cli.family import Family, Subcommands
from registry.artifacts.manifest import ManifestEntry, manifest_digest
from tracking.core.settings import Settings

COMMANDS = ("attest",)
CHUNK = 1024 * 1024


def add_commands(sub: Subcommands) -> None:
    """Register ``attest verify`` on the main parser."""
    attest = sub.add_parser("attest", help="promotion attestations (verify offline)")
    attest_sub = attest.add_subparsers(dest="attest_command", required=True)
    verify = attest_sub.add_parser(
        "verify",
        help="check an attestation's signature and that files on disk are exactly its subjects",
        description=__doc__,
    )
    verify.add_argument(
        "--envelope",
        required=True,
        help="a DSSE envelope (JSON), or an attestation object from the API holding one",
    )
    keys = verify.add_mutually_exclusive_group(required=True)
    keys.add_argument(
        "--key", action="append", help="a trusted Ed25519 public key (PEM); repeatable"
    )
    keys.add_argument(
        "--keys-url",
        help="fetch trusted keys from a server: https://mlgate/.well-known/mlgate/attestation-keys",
    )
    verify.add_argument("--files", required=True, help="the folder holding the model's files")
    verify.add_argument(
        "--target", help="the target the attestation must be for (Production, @champion)"
    )
    verify.add_argument("--model", help="the model name the attestation must be for")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")


class UsageError(Exception):
    pass


def _envelope(path: str) -> Any:
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the envelope {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("envelope"), dict):
        return data["envelope"]
    return data


def _trusted_keys(args: argparse.Namespace) -> list[VerifyingKey]:
    if args.key:
        keys = []
        for path in args.key:
            try:
                keys.append(load_public_pem(Path(path).read_bytes()))
            except (OSError, EnvelopeError) as exc:
                raise UsageError(f"cannot use the key {path}: {exc}") from None
        return keys
    import httpx

    try:
        answer = httpx.get(args.keys_url, timeout=30, follow_redirects=False)
        answer.raise_for_status()
        published = answer.json().get("keys", [])
        # The key id is recomputed from the key itself; a published id is never trusted.
        return [load_public_pem(k["public_key_pem"]) for k in published]
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"cannot fetch keys from {args.keys_url}: {exc}") from None


def _hash(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def files_on_disk(root: Path) -> dict[str, tuple[int, str]]:
    """Every regular file under ``root``: relative POSIX path -> (size, sha256)."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise UsageError(f"{path} is a symbolic link; verify a plain copy of the files")
        if path.is_file():
            found[path.relative_to(root).as_posix()] = _hash(path)
    return found


def compare(statement: dict[str, Any], on_disk: dict[str, tuple[int, str]]) -> list[str]:
    """Every way the files differ from the statement's subjects (empty: they match)."""
    problems: list[str] = []
    expected: dict[str, str] = {}
    for subject in statement.get("subject") or []:
        name = subject.get("name") if isinstance(subject, dict) else None
        sha = (subject.get("digest") or {}).get("sha256") if isinstance(subject, dict) else None
        if not isinstance(name, str) or not isinstance(sha, str) or name in expected:
            problems.append(f"malformed or repeated subject: {subject!r}")
            continue
        expected[name] = sha
    for name, sha in expected.items():
        if name not in on_disk:
            problems.append(f"{name}: missing")
        elif on_disk[name][1] != sha:
            problems.append(f"{name}: sha256 {on_disk[name][1]} != attested {sha}")
    problems.extend(f"{name}: extra (not attested)" for name in on_disk if name not in expected)
    model = (statement.get("predicate") or {}).get("model") or {}
    entries = [ManifestEntry(n, size, sha) for n, (size, sha) in on_disk.items()]
    digest = manifest_digest(entries)
    attested = model.get("manifest_digest")
    if not problems and attested != (f"sha256:{digest}" if digest else None):
        problems.append(f"manifest digest sha256:{digest} != attested {attested}")
    return problems


def run(args: argparse.Namespace) -> int:
    try:
        envelope = _envelope(args.envelope)
        keys = _trusted_keys(args)
        on_disk = files_on_disk(Path(args.files))
    except UsageError as exc:
        print(f"mlgate: {exc}", file=sys.stderr)
        return 2
    try:
        statement, key_id = verify_envelope(envelope, keys)
    except EnvelopeError as exc:
        return _report(args, False, [f"signature: {exc}"], {}, None)
    if statement.get("predicateType") != PREDICATE_TYPE:
        return _report(args, False, [f"predicateType is not {PREDICATE_TYPE}"], {}, key_id)
    predicate = statement.get("predicate") or {}
    problems = compare(statement, on_disk)
    if args.target is not None and predicate.get("target") != args.target:
        problems.append(f"target {predicate.get('target')} != expected {args.target}")
    model = (predicate.get("model") or {}).get("name")
    if args.model is not None and model != args.model:
        problems.append(f"model {model} != expected {args.model}")
    return _report(args, True, problems, predicate, key_id)


def _report(
    args: argparse.Namespace,
    signed: bool,
    problems: list[str],
    predicate: dict[str, Any],
    key_id: str | None,
) -> int:
    ok = signed and not problems
    model = predicate.get("model") or {}
    gate = predicate.get("gate") or {}
    decision = predicate.get("decision") or {}
    if args.json:
        print(
            json.dumps(
                {"verified": ok, "key_id": key_id, "problems": problems, "predicate": predicate}
            )
        )
    else:
        for problem in problems:
            print(f"FAIL {problem}")
        if ok:
            print(
                f"OK {model.get('name')} version {model.get('version')} -> "
                f"{predicate.get('target')} ({model.get('manifest_digest')}); gate "
                f"{gate.get('name')} v{gate.get('policy_version')}, decision "
                f"{decision.get('id')}; signed by key {key_id}"
            )
    return 0 if ok else 1


def _run_family(args: argparse.Namespace, settings: Settings) -> int:
    """Offline: the verification needs no setting, database or server of its own."""
    return run(args)


# Verification answers 0/1/2 itself and reports its own failures, so unguarded.
FAMILY = Family(commands=COMMANDS, add_commands=add_commands, run=_run_family, guarded=False)
