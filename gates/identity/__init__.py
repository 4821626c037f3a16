"""Deciding: users, API tokens, grants, and the rules that decide who may do what.

One of four homes of authentication (README, "Where authentication lives"). This package
decides: it checks passwords, tokens and browser session records (``service``, with the hashing
in ``credentials``) and answers what a principal's grants allow (``policy``). The kernel's
``tracking/core/auth.py`` declares what each route needs; ``gates/server/security.py`` enforces
it on every request; ``gates/server/web/session.py`` carries browser sessions (cookies, CSRF).
"""
