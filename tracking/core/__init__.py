"""Shared kernel: settings, database, errors and wire helpers used by every domain.

It lives at the bottom layer (inside ``tracking``) so that ``tracking``, ``registry`` and
``gates`` can all import it without breaking the one-way dependency rule.
"""
