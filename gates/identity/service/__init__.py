"""Identity operations: users, API tokens, grants, authentication and login throttling.

The deciding home of authentication (README, "Where authentication lives"): who a caller is
and what their grants allow; ``tracking/core/auth.py`` declares, ``gates/server/security.py``
enforces, ``gates/server/web/session.py`` carries browser sessions. Takes a session. Password
hashing runs on a worker thread (argon2id is deliberately slow). Authentication spans
transactions on purpose: a failed login is counted in its own committed transaction even
though the request fails, so the shell orchestrates the calls below. One module per concern:
``users``, ``tokens``, ``grants``, ``authentication``, ``web_sessions`` (browser session
records); callers import this package, and ``web_sessions`` by name.
"""

from gates.identity.errors import LoginThrottled
from gates.identity.service.authentication import (
    BEARER_LOGIN,
    BasicOutcome,
    ThrottlePolicy,
    authenticate_basic,
    check_current_password,
    check_login_allowed,
    clear_login_failures,
    login_key,
    record_login_failure,
    require_password_session,
    session_principal,
    verified_passwords,
    verify_token,
    verify_token_at_once,
)
from gates.identity.service.grants import (
    create_grant,
    delete_grant,
    grant_rules,
    grants_of,
    list_grants,
    user_allows,
)
from gates.identity.service.records import (
    DEFAULT_PAGE,
    MAX_PAGE,
    MAX_PASSWORD_LEN,
    MIN_PASSWORD_LEN,
    SYSTEM_ACTOR,
    USERNAME_RE,
    grant_out,
    grant_rule,
    token_out,
    user_out,
    validate_password,
    validate_username,
)
from gates.identity.service.tokens import create_token, list_tokens, revoke_token, token_owner
from gates.identity.service.users import (
    create_user,
    delete_user,
    ensure_admin,
    get_user,
    list_users,
    refuse_self_lockout,
    update_user,
)

__all__ = [
    "BEARER_LOGIN",
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "MAX_PASSWORD_LEN",
    "MIN_PASSWORD_LEN",
    "SYSTEM_ACTOR",
    "USERNAME_RE",
    "BasicOutcome",
    "LoginThrottled",
    "ThrottlePolicy",
    "authenticate_basic",
    "check_current_password",
    "check_login_allowed",
    "clear_login_failures",
    "create_grant",
    "create_token",
    "create_user",
    "delete_grant",
    "delete_user",
    "ensure_admin",
    "get_user",
    "grant_out",
    "grant_rule",
    "grant_rules",
    "grants_of",
    "list_grants",
    "list_tokens",
    "list_users",
    "login_key",
    "record_login_failure",
    "refuse_self_lockout",
    "require_password_session",
    "revoke_token",
    "session_principal",
    "token_out",
    "token_owner",
    "update_user",
    "user_allows",
    "user_out",
    "validate_password",
    "validate_username",
    "verified_passwords",
    "verify_token",
    "verify_token_at_once",
]
