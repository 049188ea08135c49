"""Who the users are and how they prove it: argon2id passwords, API tokens, console sessions, role bindings.

Secrets are never stored: passwords as argon2id hashes (argon2-cffi), API tokens and session
cookies as their sha256 (both are 256-bit random values, so a fast hash is enough). Plaintext
tokens and cookies are returned once, to their owner, and appear in no model, log or error.
Methods block on the database; the API calls them in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from voxgate.clock import utcnow
from voxgate.errors import InvalidError
from voxgate.governance.actions import ROLES
from voxgate.governance.policy import validate_scopes
from voxgate.governance.principals import Principal
from voxgate.store.db import Database
from voxgate.store.models import ApiTokenRow, ConsoleSessionRow, RoleBindingRow, UserRow

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
ENVIRONMENT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length; a bound keeps one request from hashing megabytes
TOKEN_PREFIX = "vxg_"
MAX_TOKEN_DAYS = 365
MAX_SESSION_HOURS = 24 * 30
# last_used_at is a hint for people, not an audit record: write it at most once a minute per token
_LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


class IdentityError(InvalidError):
    """Bad input or a conflict (taken username, short password); the message says what would be valid."""


class UnknownUserError(IdentityError, LookupError):
    """No user with that id."""


class User(BaseModel):
    """A user as the rest of voxgate sees one: never with the password hash."""

    model_config = ConfigDict(frozen=True)

    id: str
    username: str
    display_name: str
    is_active: bool
    created_at: dt.datetime


class TokenInfo(BaseModel):
    """An API token's metadata: `prefix` (the first characters) tells tokens apart; the token is not here."""

    model_config = ConfigDict(frozen=True)

    id: str
    user_id: str
    name: str
    prefix: str
    scopes: list[str]
    expires_at: dt.datetime
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _aware_or_none(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else _aware(value)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        is_active=row.is_active,
        created_at=_aware(row.created_at),
    )


def _token_info(row: ApiTokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        expires_at=_aware(row.expires_at),
        created_at=_aware(row.created_at),
        last_used_at=_aware_or_none(row.last_used_at),
        revoked_at=_aware_or_none(row.revoked_at),
    )


def check_username(username: str) -> str:
    """The username if it is a valid one; IdentityError says what is allowed."""
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise IdentityError(
            f"username {username!r}: use 2-64 characters, lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return username


def check_password(password: str) -> str:
    """The password if its length is allowed; IdentityError gives the limits."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise IdentityError(
            f"password: use at least {MIN_PASSWORD} characters (a passphrase of a few words works well)"
        )
    if len(password) > MAX_PASSWORD:
        raise IdentityError(f"password: use at most {MAX_PASSWORD} characters")
    return password


def check_environment(environment: str) -> str:
    """The environment if it is an environment name or '*'; IdentityError otherwise."""
    if environment != "*" and not (isinstance(environment, str) and ENVIRONMENT_RE.match(environment)):
        raise IdentityError(
            f"environment {environment!r}: give an environment name (e.g. 'prod') or '*' for every environment"
        )
    return environment


def check_role(role: str) -> str:
    """The role if it is one of ROLES; IdentityError lists them."""
    if role not in ROLES:
        raise IdentityError(f"role {role!r}: use one of {', '.join(ROLES)}")
    return role


class Identity:
    """Users, API tokens, console sessions and role bindings, stored in the voxgate database."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ):
        self.db = db
        # argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile (t=3, m=64 MiB, p=4)
        self._hasher = hasher or PasswordHasher()
        self._clock = clock
        self._dummy_hash: str | None = None

    # ---- users ------------------------------------------------------------------------------------

    def create_user(self, username: str, password: str, display_name: str = "") -> User:
        """Create an active user with no roles. Raises IdentityError for a bad or taken username or a weak password."""
        display_name = self._check_new_user(username, password, display_name)
        hashed = self._hasher.hash(password)  # slow on purpose: done before the transaction opens
        with self.db.orm() as orm, orm.begin():
            row = self._insert_user(orm, username, hashed, display_name)
        return _user(row)

    def bootstrap_admin(self, username: str, password: str) -> User:
        """Create the first user, bound as admin in every environment; refused once any user exists."""
        self._check_new_user(username, password, "")
        hashed = self._hasher.hash(password)
        with self.db.orm() as orm, orm.begin():
            if orm.scalar(select(func.count()).select_from(UserRow)):
                raise IdentityError(
                    "voxgate already has users, so no first admin is created; "
                    "an existing admin can add users and bind roles"
                )
            row = self._insert_user(orm, username, hashed, "")
            orm.add(RoleBindingRow(user_id=row.id, environment="*", role="admin", created_by=None))
        return _user(row)

    @staticmethod
    def _check_new_user(username: str, password: str, display_name: str) -> str:
        check_username(username)
        check_password(password)
        display_name = (display_name or "").strip() if isinstance(display_name, str) else ""
        if len(display_name) > 200:
            raise IdentityError("display_name: use at most 200 characters")
        return display_name

    def _insert_user(self, orm: OrmSession, username: str, password_hash: str, display_name: str) -> UserRow:
        if orm.scalar(select(UserRow.id).where(UserRow.username == username)) is not None:
            raise IdentityError(f"username {username!r} is taken")
        row = UserRow(
            id=uuid.uuid4().hex,
            username=username,
            display_name=display_name,
            password_hash=password_hash,
            is_active=True,
            created_at=self._clock(),
        )
        orm.add(row)
        try:
            orm.flush()
        except IntegrityError:  # a concurrent create of the same name won the race
            raise IdentityError(f"username {username!r} is taken") from None
        return row

    def authenticate_password(self, username: str, password: str) -> User | None:
        """The user if the password is right and the account active, else None (same answer for every failure).

        An unknown username is verified against a dummy hash so that it costs about as long as a
        wrong password, and does not tell an attacker which usernames exist.
        """
        if not isinstance(username, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            return None
        with self.db.orm() as orm:
            row = orm.scalar(select(UserRow).where(UserRow.username == username))
        # verification (deliberately slow) runs with no transaction open
        if row is None:
            self._verify(self._dummy(), password)
            return None
        if not self._verify(row.password_hash, password) or not row.is_active:
            return None
        if self._hasher.check_needs_rehash(row.password_hash):
            # the parameters were raised since this hash was made: upgrade it while we hold the password
            fresh = self._hasher.hash(password)
            with self.db.orm() as orm, orm.begin():
                orm.execute(
                    update(UserRow)
                    .where(UserRow.id == row.id, UserRow.password_hash == row.password_hash)
                    .values(password_hash=fresh)
                )
        return _user(row)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def get_user(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        with self.db.orm() as orm:
            row = orm.get(UserRow, user_id)
            return None if row is None else _user(row)

    def find_user(self, username: str) -> User | None:
        """The user with this username, or None."""
        with self.db.orm() as orm:
            row = orm.scalar(select(UserRow).where(UserRow.username == username))
            return None if row is None else _user(row)

    def list_users(self) -> list[User]:
        """Every user, by username."""
        with self.db.orm() as orm:
            return [_user(r) for r in orm.scalars(select(UserRow).order_by(UserRow.username))]

    def set_active(self, user_id: str, active: bool) -> User:
        """Enable or disable a user; a disabled user's passwords, tokens and sessions stop working at once."""
        with self.db.orm() as orm, orm.begin():
            row = orm.get(UserRow, user_id)
            if row is None:
                raise UnknownUserError(f"no user with id {user_id!r}")
            row.is_active = bool(active)
            return _user(row)

    # ---- API tokens -------------------------------------------------------------------------------

    def create_token(self, user_id: str, name: str, scopes: Sequence[str], ttl_days: int) -> tuple[str, TokenInfo]:
        """Mint an API token; returns (the token, shown this once, and its metadata). Only its sha256 is kept.

        `scopes` narrow what the user's roles allow ("*", "bundle.*", "audit.read", ...);
        `ttl_days` is required, 1 to 365.
        """
        name = (name or "").strip() if isinstance(name, str) else ""
        if not 1 <= len(name) <= 100:
            raise IdentityError("name: give the token a name of 1-100 characters (e.g. 'ci-deploy')")
        if isinstance(ttl_days, bool) or not isinstance(ttl_days, int) or not 1 <= ttl_days <= MAX_TOKEN_DAYS:
            raise IdentityError(f"ttl_days: tokens must expire; give a whole number of days from 1 to {MAX_TOKEN_DAYS}")
        try:
            scopes = validate_scopes(scopes)
        except ValueError as exc:
            raise IdentityError(str(exc)) from None
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        with self.db.orm() as orm, orm.begin():
            user = orm.get(UserRow, user_id)
            if user is None:
                raise UnknownUserError(f"no user with id {user_id!r}")
            if not user.is_active:
                raise IdentityError("a disabled user cannot get API tokens")
            row = ApiTokenRow(
                id=uuid.uuid4().hex,
                user_id=user_id,
                name=name,
                token_hash=_sha256(token),
                prefix=token[:12],
                scopes=list(scopes),
                expires_at=now + dt.timedelta(days=ttl_days),
                created_at=now,
            )
            orm.add(row)
        return token, _token_info(row)

    def authenticate_token(self, token: str) -> Principal | None:
        """The principal an API token stands for (its scopes attached), or None if unknown, expired,
        revoked or its user disabled."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        now = self._clock()
        with self.db.orm() as orm, orm.begin():
            row = orm.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == _sha256(token)))
            if row is None or row.revoked_at is not None or _aware(row.expires_at) <= now:
                return None
            user = orm.get(UserRow, row.user_id)
            if user is None or not user.is_active:
                return None
            if row.last_used_at is None or now - _aware(row.last_used_at) >= _LAST_USED_RESOLUTION:
                row.last_used_at = now
            return Principal(
                kind="user",
                id=user.id,
                username=user.username,
                roles=self._roles(orm, user.id),
                scopes=frozenset(row.scopes),
                token_id=row.id,
            )

    def list_tokens(self, user_id: str) -> list[TokenInfo]:
        """A user's API tokens (never their secrets), oldest first."""
        with self.db.orm() as orm:
            rows = orm.scalars(
                select(ApiTokenRow).where(ApiTokenRow.user_id == user_id).order_by(ApiTokenRow.created_at)
            )
            return [_token_info(r) for r in rows]

    def revoke_token(self, user_id: str, token_id: str) -> bool:
        """Revoke one of `user_id`'s tokens; False when that user has no such token (or it was revoked already)."""
        return self.revoke_own_token(user_id, token_id) == "revoked"

    def revoke_own_token(
        self, user_id: str, token_id: str
    ) -> Literal["revoked", "already_revoked", "not_yours", "not_found"]:
        """Revoke one of `user_id`'s tokens and say what happened.

        "not_yours" (the token belongs to someone else: nothing changes) and "not_found" are told
        apart for the audit log only; a caller answers both alike, so nobody learns whose ids exist.
        """
        if not isinstance(token_id, str) or not token_id:
            return "not_found"
        with self.db.orm() as orm, orm.begin():
            row = orm.get(ApiTokenRow, token_id)
            if row is None:
                return "not_found"
            if row.user_id != user_id:
                return "not_yours"
            if row.revoked_at is not None:
                return "already_revoked"
            row.revoked_at = self._clock()
            return "revoked"

    # ---- console sessions -------------------------------------------------------------------------

    def start_session(self, user_id: str, ttl_hours: int = 12) -> str:
        """Start a console sign-in; returns the cookie value (random, 256 bits). Only its sha256 is kept."""
        if isinstance(ttl_hours, bool) or not isinstance(ttl_hours, int) or not 1 <= ttl_hours <= MAX_SESSION_HOURS:
            raise IdentityError(f"ttl_hours: give a whole number of hours from 1 to {MAX_SESSION_HOURS}")
        cookie = secrets.token_urlsafe(32)
        now = self._clock()
        with self.db.orm() as orm, orm.begin():
            user = orm.get(UserRow, user_id)
            if user is None:
                raise UnknownUserError(f"no user with id {user_id!r}")
            if not user.is_active:
                raise IdentityError("a disabled user cannot sign in")
            orm.add(
                ConsoleSessionRow(
                    token_hash=_sha256(cookie),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + dt.timedelta(hours=ttl_hours),
                )
            )
        return cookie

    def session_principal(self, cookie: str) -> Principal | None:
        """The signed-in user behind a session cookie (full roles, no token scopes), or None."""
        if not isinstance(cookie, str) or not 20 <= len(cookie) <= 200:
            return None
        with self.db.orm() as orm:
            row = orm.get(ConsoleSessionRow, _sha256(cookie))
            if row is None or row.revoked_at is not None or _aware(row.expires_at) <= self._clock():
                return None
            user = orm.get(UserRow, row.user_id)
            if user is None or not user.is_active:
                return None
            return Principal(kind="user", id=user.id, username=user.username, roles=self._roles(orm, user.id))

    def end_session(self, cookie: str) -> bool:
        """Sign out: the cookie stops working. False when it was not a live session."""
        if not isinstance(cookie, str):
            return False
        with self.db.orm() as orm, orm.begin():
            row = orm.get(ConsoleSessionRow, _sha256(cookie))
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = self._clock()
            return True

    # ---- role bindings ----------------------------------------------------------------------------

    def bind_role(self, user_id: str, environment: str, role: str, by: str | None) -> bool:
        """Give `user_id` `role` in `environment` ("*": every environment). False if already bound.

        `by` is the id of the user making the change (None for the system, e.g. `voxgate init`).
        """
        check_environment(environment)
        check_role(role)
        with self.db.orm() as orm, orm.begin():
            if orm.get(UserRow, user_id) is None:
                raise UnknownUserError(f"no user with id {user_id!r}")
            exists = orm.scalar(
                select(RoleBindingRow.id).where(
                    RoleBindingRow.user_id == user_id,
                    RoleBindingRow.environment == environment,
                    RoleBindingRow.role == role,
                )
            )
            if exists is not None:
                return False
            orm.add(
                RoleBindingRow(
                    user_id=user_id, environment=environment, role=role, created_by=by, created_at=self._clock()
                )
            )
            try:
                orm.flush()
            except IntegrityError:  # bound concurrently: the outcome asked for holds
                return False
        return True

    def unbind_role(self, user_id: str, environment: str, role: str) -> bool:
        """Remove one binding; False when there was none."""
        with self.db.orm() as orm, orm.begin():
            result = orm.execute(
                delete(RoleBindingRow).where(
                    RoleBindingRow.user_id == user_id,
                    RoleBindingRow.environment == environment,
                    RoleBindingRow.role == role,
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def roles_of(self, user_id: str) -> dict[str, frozenset[str]]:
        """Environment name (or "*") → roles bound there."""
        with self.db.orm() as orm:
            return self._roles(orm, user_id)

    def principal_for(self, user: User) -> Principal:
        """The principal of a signed-in user with their full roles (no token narrowing)."""
        return Principal(kind="user", id=user.id, username=user.username, roles=self.roles_of(user.id))

    @staticmethod
    def _roles(orm: OrmSession, user_id: str) -> dict[str, frozenset[str]]:
        grouped: dict[str, set[str]] = {}
        for environment, role in orm.execute(
            select(RoleBindingRow.environment, RoleBindingRow.role).where(RoleBindingRow.user_id == user_id)
        ):
            grouped.setdefault(environment, set()).add(role)
        return {env: frozenset(roles) for env, roles in grouped.items()}
