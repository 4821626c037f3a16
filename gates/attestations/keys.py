"""The server's attestation keys: the active signer first, then retired keys kept to verify.

Loaded once at start-up from ``MLGATE_ATTESTATION_KEYS`` (PEM files, the first a private key)
or, when that is empty, from a key generated on first start in the data dir, exactly like the
audit signing key (tracking.core.signing). Every key ever loaded is remembered in the database
(``gate_attestation_keys``), so a rotated-out key stays published at
``/.well-known/mlgate/attestation-keys`` even after its file is dropped from the setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gates.attestations.dsse import EnvelopeError, Signer, VerifyingKey, load_public_pem
from tracking.core.signing import SigningKeyError, load_or_create, load_private_key

# app.state key of the AttestationKeyring.
ATTESTATION_KEYS_STATE_KEY = "attestation_keys"
DEFAULT_KEY_FILE = "attestation-key.pem"


class AttestationKeyError(ValueError):
    """A configured attestation key that cannot be read or is not Ed25519."""


@dataclass(frozen=True)
class AttestationKeyring:
    signer: Signer
    retired: tuple[VerifyingKey, ...] = ()

    @property
    def verifying_keys(self) -> list[VerifyingKey]:
        return [self.signer.public, *self.retired]


def load_keyring(paths: tuple[Path, ...], default_path: Path) -> tuple[AttestationKeyring, bool]:
    """The keyring the settings name; returns (keyring, whether a default key was created)."""
    created = False
    try:
        if paths:
            active = load_private_key(paths[0])
        else:
            active, created = load_or_create(default_path)
    except SigningKeyError as exc:
        raise AttestationKeyError(f"attestation key: {exc}") from None
    retired = []
    for path in paths[1:]:
        try:
            retired.append(load_public_pem(path.read_bytes()))
        except OSError as exc:
            raise AttestationKeyError(
                f"cannot read attestation key {path}: {exc.strerror or exc}"
            ) from None
        except EnvelopeError as exc:
            raise AttestationKeyError(f"attestation key {path}: {exc}") from None
    return AttestationKeyring(Signer.from_private(active.private), tuple(retired)), created
