"""Identity on SQLite and PostgreSQL: argon2id passwords, API tokens, console sessions, role bindings."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, text

from voxgate.governance.identity import Identity, IdentityError, UnknownUserError
from voxgate.governance.policy import PolicyContext, PolicyEngine, Resource
from voxgate.store.db import Database
from voxgate.store.models import ApiTokenRow, ConsoleSessionRow, UserRow

PASSWORD = "correct horse battery"
# argon2id with small parameters keeps the suite quick; the default hasher is checked once below
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    """A settable clock, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def identity(db: Database, clock: Clock) -> Identity:
    return Identity(db, hasher=FAST, clock=clock)


def _stored_hash(db: Database, username: str) -> str:
    with db.orm() as orm:
        return orm.scalar(select(UserRow.password_hash).where(UserRow.username == username))  # type: ignore[return-value]


# ---- users and passwords ----------------------------------------------------------------------------


@pytest.mark.production_hasher
def test_password_is_stored_as_argon2id_with_the_default_hasher(db: Database) -> None:
    identity = Identity(db)  # the production parameters
    user = identity.create_user("alice", PASSWORD, "Alice A.")
    stored = _stored_hash(db, "alice")
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored and stored != PASSWORD
    assert "password" not in user.model_dump() and "password_hash" not in user.model_dump()
    assert identity.authenticate_password("alice", PASSWORD) == user


def test_wrong_password_unknown_user_and_disabled_user_all_get_none(identity: Identity) -> None:
    user = identity.create_user("bob", PASSWORD)
    assert identity.authenticate_password("bob", PASSWORD + "!") is None
    assert identity.authenticate_password("nobody", PASSWORD) is None
    assert identity.authenticate_password("bob", "") is None
    identity.set_active(user.id, False)
    assert identity.authenticate_password("bob", PASSWORD) is None
    identity.set_active(user.id, True)
    assert identity.authenticate_password("bob", PASSWORD) is not None


def test_login_rehashes_when_the_parameters_changed(db: Database, identity: Identity) -> None:
    identity.create_user("carol", PASSWORD)
    old = _stored_hash(db, "carol")
    assert "m=1024,t=1,p=1" in old
    stronger = Identity(db, hasher=PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    assert stronger.authenticate_password("carol", PASSWORD) is not None
    new = _stored_hash(db, "carol")
    assert new != old and new.startswith("$argon2id$") and "m=2048,t=2,p=1" in new
    # the upgraded hash verifies and, its parameters now current, is left alone
    assert stronger.authenticate_password("carol", PASSWORD) is not None
    assert _stored_hash(db, "carol") == new
    # a wrong password never rewrites the hash, even when the parameters differ
    assert identity.authenticate_password("carol", "not the password at all") is None
    assert _stored_hash(db, "carol") == new


@pytest.mark.parametrize(
    ("username", "password", "fragment"),
    [
        ("ab", "short", "at least 12 characters"),
        ("Alice", PASSWORD, "lowercase"),
        ("a", PASSWORD, "2-64 characters"),
        ("-dash", PASSWORD, "starting with a letter or digit"),
        ("ok.name", "x" * 1025, "at most 1024"),
    ],
)
def test_bad_usernames_and_passwords_are_refused_clearly(
    identity: Identity, username: str, password: str, fragment: str
) -> None:
    with pytest.raises(IdentityError, match=fragment):
        identity.create_user(username, password)
    assert identity.list_users() == []


def test_usernames_are_unique(identity: Identity) -> None:
    identity.create_user("dave", PASSWORD)
    with pytest.raises(IdentityError, match="'dave' is taken"):
        identity.create_user("dave", PASSWORD + "x")
    assert [u.username for u in identity.list_users()] == ["dave"]


def test_get_find_list_and_set_active(identity: Identity) -> None:
    b = identity.create_user("bea", PASSWORD)
    a = identity.create_user("abe", PASSWORD, "  Abe  ")
    assert [u.username for u in identity.list_users()] == ["abe", "bea"]
    assert identity.get_user(a.id) == a and a.display_name == "Abe"
    assert identity.find_user("bea") == b
    assert identity.get_user("0" * 32) is None and identity.find_user("zed") is None
    assert identity.set_active(b.id, False).is_active is False
    with pytest.raises(UnknownUserError):
        identity.set_active("0" * 32, True)


def test_bootstrap_admin_only_on_an_empty_directory(identity: Identity) -> None:
    admin = identity.bootstrap_admin("root", PASSWORD)
    assert identity.roles_of(admin.id) == {"*": frozenset({"admin"})}
    with pytest.raises(IdentityError, match="already has users"):
        identity.bootstrap_admin("root2", PASSWORD)
    assert [u.username for u in identity.list_users()] == ["root"]


# ---- API tokens -------------------------------------------------------------------------------------


def test_token_is_shown_once_and_stored_only_as_its_sha256(db: Database, identity: Identity) -> None:
    user = identity.create_user("erin", PASSWORD)
    identity.bind_role(user.id, "dev", "maker", by=None)
    token, info = identity.create_token(user.id, "ci", ["bundle.*", "release.read"], ttl_days=30)
    assert token.startswith("vxg_") and len(token) >= 4 + 43
    assert info.prefix == token[:12] and token not in info.model_dump_json()
    with db.orm() as orm:
        row = orm.get(ApiTokenRow, info.id)
        assert row is not None
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (row.token_hash, row.prefix, row.name)
    [listed] = identity.list_tokens(user.id)
    assert listed.id == info.id and listed.scopes == ["bundle.*", "release.read"]
    assert token not in listed.model_dump_json()

    principal = identity.authenticate_token(token)
    assert principal is not None
    assert (principal.kind, principal.id, principal.username, principal.token_id) == ("user", user.id, "erin", info.id)
    assert principal.scopes == frozenset({"bundle.*", "release.read"})
    assert principal.roles_in("dev") == frozenset({"maker"})
    assert principal.audit_actor == f"user:{user.id}/token:{info.id}"
    assert identity.list_tokens(user.id)[0].last_used_at is not None


def test_tokens_that_are_wrong_expired_revoked_or_of_a_disabled_user_are_refused(
    identity: Identity, clock: Clock
) -> None:
    user = identity.create_user("fay", PASSWORD)
    short, short_info = identity.create_token(user.id, "short", ["*"], ttl_days=1)
    long, long_info = identity.create_token(user.id, "long", ["*"], ttl_days=365)
    assert identity.authenticate_token(short) is not None
    for bad in (
        "",
        "vxg_",
        "vxg_" + "A" * 43,
        short[:-1] + ("A" if short[-1] != "A" else "B"),
        short[4:],
        "Bearer " + short,
    ):
        assert identity.authenticate_token(bad) is None, bad

    clock.advance(days=1)  # expiry is exclusive: at expires_at the token is dead
    assert identity.authenticate_token(short) is None
    assert identity.authenticate_token(long) is not None

    other = identity.create_user("gus", PASSWORD)
    assert identity.revoke_token(other.id, long_info.id) is False  # not theirs to revoke
    assert identity.authenticate_token(long) is not None
    assert identity.revoke_token(user.id, long_info.id) is True
    assert identity.revoke_token(user.id, long_info.id) is False  # already revoked
    assert identity.authenticate_token(long) is None

    third, _ = identity.create_token(user.id, "third", ["audit.read"], ttl_days=7)
    identity.set_active(user.id, False)
    assert identity.authenticate_token(third) is None
    assert short_info.id != long_info.id


@pytest.mark.parametrize(
    ("scopes", "ttl", "fragment"),
    [
        (["bundle.publishh"], 30, "covers no action"),
        (["nope.*"], 30, "covers no action"),
        ([], 30, "at least one scope"),
        ("bundle.*", 30, "at least one scope"),
        (["*"], 0, "from 1 to 365"),
        (["*"], 366, "from 1 to 365"),
        (["*"], None, "tokens must expire"),
    ],
)
def test_token_scopes_and_ttl_are_validated(identity: Identity, scopes: object, ttl: object, fragment: str) -> None:
    user = identity.create_user("hal", PASSWORD)
    with pytest.raises(IdentityError, match=fragment):
        identity.create_token(user.id, "x", scopes, ttl)  # type: ignore[arg-type]
    assert identity.list_tokens(user.id) == []


def test_token_scopes_narrow_what_the_policy_allows(identity: Identity) -> None:
    engine = PolicyEngine.load()
    admin = identity.bootstrap_admin("ivy", PASSWORD)
    token, _ = identity.create_token(admin.id, "audit-export", ["audit.read"], ttl_days=1)
    principal = identity.authenticate_token(token)
    assert principal is not None
    assert engine.decide(principal, "audit.read", Resource.audit_log(), PolicyContext()).allowed
    denied = engine.decide(principal, "user.manage", Resource.directory(), PolicyContext())
    assert not denied.allowed and denied.reasons == ("token-scope",)
    # the same user without the token (a console session) is an unnarrowed admin
    assert engine.decide(identity.principal_for(admin), "user.manage", Resource.directory(), PolicyContext()).allowed


# ---- console sessions -------------------------------------------------------------------------------


def test_session_cookie_works_until_it_ends_or_expires(db: Database, identity: Identity, clock: Clock) -> None:
    user = identity.create_user("jan", PASSWORD)
    identity.bind_role(user.id, "prod", "operator", by=None)
    cookie = identity.start_session(user.id, ttl_hours=2)
    with db.orm() as orm:
        [row] = orm.scalars(select(ConsoleSessionRow)).all()
        assert row.token_hash == hashlib.sha256(cookie.encode()).hexdigest() and cookie != row.token_hash
    principal = identity.session_principal(cookie)
    assert principal is not None and principal.id == user.id and principal.scopes is None
    assert principal.roles_in("prod") == frozenset({"operator"})
    assert identity.session_principal(cookie + "x") is None
    assert identity.end_session(cookie) is True
    assert identity.session_principal(cookie) is None
    assert identity.end_session(cookie) is False

    second = identity.start_session(user.id, ttl_hours=2)
    clock.advance(hours=1, minutes=59)
    assert identity.session_principal(second) is not None
    clock.advance(minutes=1)
    assert identity.session_principal(second) is None

    third = identity.start_session(user.id)
    identity.set_active(user.id, False)
    assert identity.session_principal(third) is None
    with pytest.raises(IdentityError, match="disabled"):
        identity.start_session(user.id)
    with pytest.raises(IdentityError, match="from 1 to"):
        identity.start_session(user.id, ttl_hours=0)


# ---- role bindings ----------------------------------------------------------------------------------


def test_bindings_are_per_environment(identity: Identity) -> None:
    engine = PolicyEngine.load()
    user = identity.create_user("kim", PASSWORD)
    assert identity.bind_role(user.id, "dev", "maker", by=None) is True
    assert identity.bind_role(user.id, "dev", "maker", by=None) is False  # idempotent
    assert identity.bind_role(user.id, "*", "auditor", by=user.id) is True
    assert identity.roles_of(user.id) == {"dev": frozenset({"maker"}), "*": frozenset({"auditor"})}
    principal = identity.principal_for(user)
    assert principal.roles_in("dev") == frozenset({"maker", "auditor"})
    assert principal.roles_in("prod") == frozenset({"auditor"})

    # a maker in dev is not a maker in prod
    dev = engine.decide(
        principal, "bundle.upload", Resource.environment("dev", "development"), PolicyContext("dev", "development")
    )
    prod = engine.decide(
        principal, "bundle.upload", Resource.environment("prod", "production"), PolicyContext("prod", "production")
    )
    assert dev.allowed and dev.reasons == ("maker-build",)
    assert not prod.allowed and prod.reasons == ()

    assert identity.unbind_role(user.id, "dev", "maker") is True
    assert identity.unbind_role(user.id, "dev", "maker") is False
    assert identity.roles_of(user.id) == {"*": frozenset({"auditor"})}


def test_binding_input_is_checked(identity: Identity) -> None:
    user = identity.create_user("lee", PASSWORD)
    with pytest.raises(IdentityError, match="use one of admin, maker"):
        identity.bind_role(user.id, "dev", "superuser", by=None)
    with pytest.raises(IdentityError, match="environment name"):
        identity.bind_role(user.id, "Prod Env", "maker", by=None)
    with pytest.raises(UnknownUserError):
        identity.bind_role("0" * 32, "dev", "maker", by=None)
    assert identity.roles_of(user.id) == {}


def test_nothing_secret_is_in_the_database_dump(db: Database, identity: Identity) -> None:
    user = identity.create_user("max", PASSWORD)
    token, _ = identity.create_token(user.id, "t", ["*"], ttl_days=1)
    cookie = identity.start_session(user.id)
    dump = []
    with db.engine.connect() as conn:
        for table in ("users", "api_tokens", "console_sessions", "role_bindings"):
            dump += [repr(tuple(r)) for r in conn.execute(text(f"SELECT * FROM {table}"))]
    joined = "\n".join(dump)
    for secret in (PASSWORD, token, token[12:], cookie):
        assert secret not in joined
