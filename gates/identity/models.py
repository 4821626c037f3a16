"""Identity tables: users, API tokens, grants and the shared login-failure counters."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tracking.core.db import Base
from tracking.core.types import BigIntPK

USERNAME_LEN = 256
TOKEN_NAME_LEN = 256
PATTERN_LEN = 500


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LEN), unique=True)
    # Argon2id; NULL for accounts that authenticate with API tokens only (CI bots).
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # A disabled user keeps its grants and history but cannot authenticate, by any means.
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ApiToken(Base):
    """A named bearer token. Only its sha256 is stored; ``prefix`` is its public lookup key."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(TOKEN_NAME_LEN))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_api_tokens_user_created", "user_id", "created_at"),)


class Grant(Base):
    """A role for one user on experiments or registered models named by ``pattern``.

    ``pattern`` is an exact name, a ``*``/``?`` glob (``fraud-*``), or for experiments a
    numeric id. ``targets`` (JSON list, registered models only) narrows what ``promote`` may
    move: stages (``Staging``) and aliases (``@candidate``); NULL means every target.
    """

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(32))
    pattern: Mapped[str] = mapped_column(String(PATTERN_LEN))
    role: Mapped[str] = mapped_column(String(16))
    targets: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(USERNAME_LEN))

    __table_args__ = (UniqueConstraint("user_id", "resource_type", "pattern"),)


class LoginFailure(Base):
    """Failed logins per (user name, client) in a fixed window, shared by every replica."""

    __tablename__ = "login_failures"

    # sha256 of the user name and client address: no plaintext names of failed attempts.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[int] = mapped_column(BigInteger)


class WebSession(Base):
    """A signed-in browser (the web UI). Only the sha256 of the cookie's secret is stored.

    Sessions live in the database so every replica honours them and logging out or disabling
    the user ends them everywhere. ``csrf_secret`` is the per-session token forms must echo.
    """

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    csrf_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_web_sessions_user", "user_id"),
        Index("ix_web_sessions_expires", "expires_at"),
    )


__all__ = ["ApiToken", "Grant", "LoginFailure", "User", "WebSession"]
