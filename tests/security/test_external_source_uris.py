"""The s3:// parser behind MLGATE_EXTERNAL_SOURCES and external version sources.

One spelling per location: anything that could make the allow-list check and the later read see
different objects is refused, never normalised.
"""

from __future__ import annotations

import pytest

from tracking.core.object_uris import S3Location, parse_s3_prefixes, parse_s3_uri
from tracking.core.settings import Settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("s3://ml-team/exports/fraud", S3Location("ml-team", "exports/fraud")),
        ("S3://ml-team/exports/fraud/", S3Location("ml-team", "exports/fraud")),
        ("s3://a.b-c/x", S3Location("a.b-c", "x")),
    ],
)
def test_accepted_forms_are_canonical(raw: str, expected: S3Location) -> None:
    assert parse_s3_uri(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "s3://ml-team",  # a whole bucket is not a model folder
        "s3://ml-team/",
        "s3://ml-team/a/../b",
        "s3://ml-team/a/./b",
        "s3://ml-team//a",
        "s3://ml-team/a//b",
        "s3://ml-team/a/%2e%2e/b",
        "s3://ml-team/a\\..\\b",
        "s3://ml-team/a?versionId=1",
        "s3://ml-team/a#b",
        "s3://ml-team/a;b",
        "s3://ml-team/a\x00b",
        " s3://ml-team/a",
        "s3://ML-TEAM/a",
        "s3://ml_team/a",
        "s3://ab/a",
        "s3://ml..team/a",
        "s3://192.168.0.1/a",
        "s3://user@ml-team/a",
        "s3://ml-team:9000/a",
        "s3:/ml-team/a",
        "s3a://ml-team/a",
        "https://ml-team.s3.amazonaws.com/a",
    ],
)
def test_ambiguous_or_foreign_forms_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_s3_uri(raw)


def test_prefixes_match_on_a_path_segment_boundary() -> None:
    (exports, bucket) = parse_s3_prefixes("s3://ml-team/exports/, s3://whole-bucket")
    assert exports.contains(parse_s3_uri("s3://ml-team/exports/fraud/v3"))
    assert exports.contains(parse_s3_uri("s3://ml-team/exports"))
    assert not exports.contains(parse_s3_uri("s3://ml-team/exports-old/fraud"))
    assert not exports.contains(parse_s3_uri("s3://ml-team2/exports/fraud"))
    assert bucket.contains(parse_s3_uri("s3://whole-bucket/any/thing"))


def test_the_setting_is_checked_at_start_and_names_itself() -> None:
    assert Settings.from_env({"MLGATE_EXTERNAL_SOURCES": ""}).external_source_prefixes == ()
    for bad in ("s3://ml-team/a/../b", "file:///models", "s3://Bad/x", "s3://ok-b/x,https://y"):
        with pytest.raises(ValueError, match="MLGATE_EXTERNAL_SOURCES"):
            Settings.from_env({"MLGATE_EXTERNAL_SOURCES": bad})
