"""DSSE envelopes without a server: the PAE vector of the DSSE specification, and envelopes
that must not verify (wrong payload type, a signature by another key, a non-statement)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gates.attestations.dsse import (
    EnvelopeError,
    Signer,
    load_public_pem,
    pae,
    verify_envelope,
)

STATEMENT = {"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x"}


def test_pae_matches_the_dsse_specification_example() -> None:
    # secure-systems-lab/dsse protocol.md: the encoding of "hello world" as an example type.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_envelope_verifies_with_its_key_and_key_id_is_the_der_sha256() -> None:
    signer = Signer.from_private(Ed25519PrivateKey.generate())
    envelope, payload = signer.envelope(STATEMENT)
    statement, key_id = verify_envelope(envelope, [signer.public])
    assert statement == STATEMENT and key_id == signer.public.key_id
    assert load_public_pem(signer.public.pem).key_id == key_id
    assert base64.b64decode(envelope["payload"]) == payload


def test_envelope_signed_by_another_key_does_not_verify() -> None:
    signer = Signer.from_private(Ed25519PrivateKey.generate())
    other = Signer.from_private(Ed25519PrivateKey.generate())
    envelope, _ = signer.envelope(STATEMENT)
    with pytest.raises(EnvelopeError, match="no signature verifies"):
        verify_envelope(envelope, [other.public])
    # Naming the trusted key's id does not help a signature it did not make.
    envelope["signatures"][0]["keyid"] = other.public.key_id
    with pytest.raises(EnvelopeError, match="no signature verifies"):
        verify_envelope(envelope, [other.public])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"payloadType": "application/json"}, "payloadType"),
        ({"signatures": []}, "no signatures"),
        ({"payload": "***"}, "base64"),
    ],
)
def test_malformed_envelopes_are_refused(change: dict[str, object], message: str) -> None:
    signer = Signer.from_private(Ed25519PrivateKey.generate())
    envelope, _ = signer.envelope(STATEMENT)
    with pytest.raises(EnvelopeError, match=message):
        verify_envelope({**envelope, **change}, [signer.public])


def test_a_signed_payload_that_is_not_an_in_toto_statement_is_refused() -> None:
    signer = Signer.from_private(Ed25519PrivateKey.generate())
    envelope, _ = signer.envelope({"_type": "something else"})
    with pytest.raises(EnvelopeError, match="in-toto statement"):
        verify_envelope(envelope, [signer.public])
    assert json.loads(base64.b64decode(envelope["payload"]))["_type"] == "something else"
