"""Wire structs of mlgate's identity API (users, tokens, grants), in snake_case JSON.

IDs go out as strings, as in MLflow's protocol. Constraints declared with ``Meta`` are checked
when a request is decoded and published in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Username = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+\-]*$",
        description="Letters, digits and . _ @ + - (starting with a letter or digit).",
    ),
]
Password = Annotated[
    str,
    msgspec.Meta(min_length=12, max_length=1024, description="At least 12 characters."),
]
TokenName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Pattern = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=500,
        description="An exact name, a glob with * and ? (fraud-*), * for all, or for "
        "experiments a numeric experiment id.",
    ),
]
Target = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        description="A stage (Staging, Production, Archived, None) or an alias (@candidate; "
        "* and ? allowed).",
    ),
]
EpochMillis = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
ObjectId = Annotated[str, msgspec.Meta(min_length=1, max_length=18, pattern=r"^[0-9]+$")]
Role = Literal["reader", "editor", "approver", "admin"]
ResourceType = Literal["experiment", "registered_model"]

# --- requests --------------------------------------------------------------------------------


class CreateUser(msgspec.Struct):
    username: Username
    # Omitted: the user can only authenticate with API tokens (a service account).
    password: Password | None = None
    is_admin: bool = False


class UpdateUser(msgspec.Struct):
    username: Username
    password: Password | None = None
    # Needed to change your own password: a hijacked session or token cannot take the account.
    current_password: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    is_admin: bool | None = None
    disabled: bool | None = None


class UserRef(msgspec.Struct):
    username: Username


class CreateToken(msgspec.Struct):
    name: TokenName
    # Administrators may create a token for another user (a CI service account).
    username: Username | None = None
    expires_at: EpochMillis | None = None


class RevokeToken(msgspec.Struct):
    token_id: ObjectId


class CreateGrant(msgspec.Struct):
    username: Username
    resource_type: ResourceType
    pattern: Pattern
    role: Role
    # Registered models only: the stages and aliases ``promote`` may move. Omitted: all.
    targets: list[Target] | None = None


class GrantRef(msgspec.Struct):
    grant_id: ObjectId


# --- responses -------------------------------------------------------------------------------


class UserOut(msgspec.Struct):
    username: str
    is_admin: bool
    disabled: bool
    has_password: bool
    created_at: int
    updated_at: int


class UserResponse(msgspec.Struct):
    user: UserOut


class UserList(msgspec.Struct, omit_defaults=True):
    users: list[UserOut]
    next_page_token: str | None = None


class TokenOut(msgspec.Struct, omit_defaults=True):
    token_id: str
    name: str
    username: str
    # The token's public lookup prefix (``mlg_<prefix>_…``), to tell tokens apart.
    prefix: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None


class TokenCreated(msgspec.Struct):
    token: TokenOut
    # The bearer secret. Shown in this response only; mlgate keeps just its hash.
    secret: str


class TokenResponse(msgspec.Struct):
    token: TokenOut


class TokenList(msgspec.Struct, omit_defaults=True):
    tokens: list[TokenOut]
    next_page_token: str | None = None


class GrantOut(msgspec.Struct, omit_defaults=True):
    grant_id: str
    username: str
    resource_type: str
    pattern: str
    role: str
    created_at: int
    created_by: str
    targets: list[str] | None = None


class GrantResponse(msgspec.Struct):
    grant: GrantOut


class GrantList(msgspec.Struct, omit_defaults=True):
    grants: list[GrantOut]
    next_page_token: str | None = None


class WhoAmI(msgspec.Struct, omit_defaults=True):
    username: str
    is_admin: bool
    auth_enabled: bool
    # basic | token | none (auth off)
    authenticated_by: str
    grants: list[GrantOut]
    token_id: str | None = None
    token_name: str | None = None


class Empty(msgspec.Struct):
    pass


class ErrorOut(msgspec.Struct):
    """Every error: MLflow's shape."""

    error_code: str
    message: str
