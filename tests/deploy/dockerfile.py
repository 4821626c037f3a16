"""A small reader for the Dockerfile's stages and instructions (the deploy tests check it)."""

from __future__ import annotations

import shlex


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            current = []
            stages[args.split()[-1]] = current
        else:
            current.append((keyword, args))
    return stages


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for k, args in stage if k == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def env(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The stage's ENV settings (KEY=VALUE form)."""
    out: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            out.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return out
