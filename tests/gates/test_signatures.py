"""Standard Webhooks verification: id, timestamp and body are all signed; rotation overlaps."""

from __future__ import annotations

import pytest

from gates.policies.errors import BadSignature
from gates.policies.signatures import (
    check_timestamp,
    matching_secret,
    new_secret,
    parse_headers,
    sign,
    signed_headers,
)

BODY = b'{"model":"fraud","target":"Staging"}'


def test_signature_matches_the_secret_that_made_it_among_several() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers(old, "msg_1", 1_700_000_000, BODY)
    parsed = parse_headers(headers)
    assert parsed is not None
    assert matching_secret(parsed, [new, old], BODY) == 1
    assert matching_secret(parsed, [new], BODY) is None
    assert matching_secret(parsed, [old], BODY + b" ") is None


def test_id_and_timestamp_are_part_of_what_is_signed() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_1", 1_700_000_000, BODY)
    for key, value in (("webhook-id", "msg_2"), ("webhook-timestamp", "1700000001")):
        parsed = parse_headers({**headers, key: value})
        assert parsed is not None and matching_secret(parsed, [secret], BODY) is None


def test_several_space_separated_signatures_and_unknown_schemes() -> None:
    a, b = new_secret(), new_secret()
    value = f"v1a,AAAA {sign(a, 'm', 5, BODY)} {sign(b, 'm', 5, BODY)}"
    parsed = parse_headers(
        {"webhook-id": "m", "webhook-timestamp": "5", "webhook-signature": value}
    )
    assert parsed is not None and len(parsed.signatures) == 2
    assert matching_secret(parsed, [b], BODY) == 0


def test_malformed_headers_and_the_window() -> None:
    assert parse_headers({}) is None  # unsigned: the caller may use a token instead
    with pytest.raises(BadSignature):
        parse_headers({"webhook-id": "m", "webhook-timestamp": "5"})
    with pytest.raises(BadSignature):
        parse_headers({"webhook-id": "m", "webhook-timestamp": "soon", "webhook-signature": "v1,x"})
    with pytest.raises(BadSignature):
        parse_headers({"webhook-id": "m", "webhook-timestamp": "5", "webhook-signature": "v2,x"})
    parsed = parse_headers(signed_headers(new_secret(), "m", 1000, BODY))
    assert parsed is not None
    check_timestamp(parsed, 1300)
    check_timestamp(parsed, 700)
    for now in (1301, 699):
        with pytest.raises(BadSignature):
            check_timestamp(parsed, now)
