"""Shared kernel: settings, database, errors, wire helpers and auth primitives of every domain.

It lives at the bottom layer (inside ``tracking``) so that ``tracking``, ``registry`` and
``gates`` can all import it without breaking the one-way dependency rule.
"""
