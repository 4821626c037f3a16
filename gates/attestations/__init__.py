"""Signed promotion attestations (in-toto in DSSE) and the admission oracle."""
