"""Cedar policies: role × action × environment matrix, separation of duties, token scopes, validation at load."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from voxgate.governance.actions import ACTIONS, ROLES
from voxgate.governance.policy import (
    DEFAULT_POLICY_DIR,
    Decision,
    PolicyContext,
    PolicyEngine,
    PolicyLoadError,
    Resource,
    scopes_cover,
    validate_scopes,
)
from voxgate.governance.principals import Principal

ENVIRONMENTS = {"dev": "development", "test": "test", "prod": "production"}
ALL = frozenset(ENVIRONMENTS.values())
DEV, TEST, PROD = "development", "test", "production"
READS = ("bundle.read", "release.read", "environment.read", "policy.read")

# The specification, written out independently of the policy files: for each role bound in one
# environment, the actions it may take there, on which tiers, and the permit that says so.
# Global actions (user.*, audit.read) and token.manage_own are tested separately below.
EXPECTED: dict[str, dict[str, tuple[frozenset[str], str]]] = {
    "admin": {
        **{a: (ALL, "admin-all") for a in ACTIONS},
        "bundle.deploy": (frozenset({DEV, TEST}), "admin-all"),
        "bundle.promote": (frozenset({DEV, TEST}), "admin-all"),
    },
    "maker": {
        "bundle.upload": (ALL, "maker-build"),
        "bundle.promote": (frozenset({DEV, TEST}), "maker-build"),
        "publish.request": (ALL, "maker-build"),
        "bundle.deploy": (frozenset({DEV}), "maker-deploy-development"),
        **{a: (ALL, "maker-read") for a in READS},
    },
    "tester": {
        "bundle.promote": (frozenset({TEST}), "tester-promote-test"),
        **{a: (ALL, "tester-read") for a in READS},
    },
    "approver": {
        "publish.approve": (ALL, "approver-approve-publish"),
        "bundle.publish": (ALL, "approver-approve-publish"),
        **{a: (ALL, "approver-read") for a in READS},
    },
    "operator": {
        a: (ALL, "operator-run")
        for a in (
            "release.rollback",
            "bundle.publish",
            "voice.stats",
            "cluster.read",
            "analytics.read",
            "incident.read",
            "incident.manage",
            "handoff.read",
            "release.read",
            "environment.read",
            "handoff.accept",
            "desk.manage",
        )
    },
    "desk_agent": {"handoff.read": (ALL, "desk-agent-handoff"), "handoff.accept": (ALL, "desk-agent-handoff")},
    "auditor": {
        a: (ALL, "auditor-read")
        for a in (
            "session.read",
            "analytics.read",
            "incident.read",
            "release.read",
            "bundle.read",
            "environment.read",
            "policy.read",
        )
    },
    "compliance_officer": {
        a: (ALL, "compliance-officer")
        for a in (
            "session.read",
            "analytics.read",
            "incident.read",
            "policy.read",
            "dlp.exception.grant",
            "environment.read",
            "release.read",
            "bundle.read",
            "privacy.manage",
            "retention.run",
            "recording.read",
        )
    },
}
GLOBAL_ACTIONS = ("user.read", "user.manage", "audit.read", "token.manage_own")
EXPECTED_GLOBAL = {
    "admin": {"user.read", "user.manage", "audit.read"},
    "auditor": {"audit.read"},
    "compliance_officer": {"audit.read"},
}


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.load()


def user(uid: str, **roles: set[str] | frozenset[str]) -> Principal:
    bound = {("*" if env == "everywhere" else env): frozenset(r) for env, r in roles.items()}
    return Principal(kind="user", id=uid, username=uid, roles=bound)


def resource_for(action: str, env: str) -> Resource:
    """A resource of the action's type in `env`, authored and requested by someone else."""
    kind = ACTIONS[action].resource
    if kind == "Environment":
        return Resource.environment(env, ENVIRONMENTS[env])
    if kind == "Bundle":
        return Resource.bundle("sha256:" + "ab" * 32, author="someone-else", agent="harbor-support")
    if kind == "PublishRequest":
        return Resource.publish_request("pr1", author="someone-else", requester="another", target=env)
    if kind == "Agent":
        return Resource.agent("harbor-support")
    raise AssertionError(f"{action} is not environment-scoped")


def forbids_for(principal: Principal, action: str, env: str) -> tuple[str, ...]:
    """Which forbid policies the specification expects to fire for a request in `env`."""
    tier, roles = ENVIRONMENTS[env], principal.roles_in(env)
    fired = []
    if action == "bundle.deploy" and tier == PROD:
        fired.append("sod-no-deploy-to-production")
    if action == "bundle.promote" and tier == PROD:
        fired.append("sod-no-promote-to-production")
    if action == "bundle.publish" and roles == {"maker"}:
        fired.append("sod-maker-cannot-publish")
    if action == "release.override_window" and "admin" not in roles:
        fired.append("override-window-admin-only")
    return tuple(fired)


ENV_ACTIONS = [a for a in ACTIONS if a not in GLOBAL_ACTIONS]


def test_the_specification_covers_every_action_and_role() -> None:
    assert set(EXPECTED) == set(ROLES)
    assert set(ENV_ACTIONS) | set(GLOBAL_ACTIONS) == set(ACTIONS)
    for role, actions in EXPECTED.items():
        assert set(actions) <= set(ACTIONS), role


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix_over_every_environment_action(engine: PolicyEngine, role: str) -> None:
    """Every role bound in one environment × every action × every environment: zero unexpected allows."""
    mismatches = []
    decided = 0
    for bound_env in ENVIRONMENTS:
        principal = user(f"{role}-{bound_env}", **{bound_env: {role}})
        for env, tier in ENVIRONMENTS.items():
            for action in ENV_ACTIONS:
                decision = engine.decide(principal, action, resource_for(action, env), PolicyContext(env, tier))
                decided += 1
                tiers, permit = EXPECTED[role].get(action, (frozenset(), ""))
                # roles bound in another environment count for nothing here
                expect_allow = env == bound_env and tier in tiers
                if action == "call.start":
                    # any signed-in user may talk to a served agent, wherever their roles are
                    expected = Decision(True, ("user-start-call",) + ((permit,) if expect_allow else ()), ())
                elif expect_allow:
                    expected = Decision(True, (permit,), ())
                else:
                    expected = Decision(False, forbids_for(principal, action, env), ())
                if decision != expected:
                    mismatches.append((bound_env, env, action, decision, expected))
    assert decided == 3 * 3 * len(ENV_ACTIONS)
    assert mismatches == []


@pytest.mark.parametrize("role", ROLES)
def test_global_actions_need_a_binding_on_every_environment(engine: PolicyEngine, role: str) -> None:
    everywhere = user(f"{role}-all", everywhere={role})
    only_prod = user(f"{role}-prod", prod={role})
    for action in ("user.read", "user.manage", "audit.read"):
        target = Resource.audit_log() if action == "audit.read" else Resource.directory()
        allowed = engine.decide(everywhere, action, target, PolicyContext())
        assert allowed.allowed == (action in EXPECTED_GLOBAL.get(role, set())), (role, action, allowed)
        # a binding in one environment never reaches global resources: an admin of prod alone
        # cannot create users and bind themselves elsewhere
        assert not engine.decide(only_prod, action, target, PolicyContext()).allowed


@pytest.mark.parametrize("roles", [set(), {"desk_agent"}, {"admin"}, {"maker", "approver"}])
def test_everyone_manages_their_own_tokens_and_nobody_elses(engine: PolicyEngine, roles: set[str]) -> None:
    principal = user("me", everywhere=roles) if roles else user("me")
    own = engine.decide(principal, "token.manage_own", Resource.user("me"), PolicyContext())
    other = engine.decide(principal, "token.manage_own", Resource.user("you"), PolicyContext())
    # reasons come in load order: roles.cedar before self_service.cedar
    assert own == Decision(True, ("admin-all", "own-tokens") if "admin" in roles else ("own-tokens",), ())
    assert other == Decision(False, ("own-tokens-only",), ())


# ---- separation of duties -----------------------------------------------------------------------------


def test_the_author_never_approves_their_own_publish_not_even_an_admin(engine: PolicyEngine) -> None:
    ctx = PolicyContext("prod", PROD)
    author = user("author", prod={"approver", "admin", "maker"})
    for req in (
        Resource.publish_request("pr1", author="author", requester="someone", target="prod"),
        Resource.publish_request("pr2", author="someone", requester="author", target="prod"),
    ):
        decision = engine.decide(author, "publish.approve", req, ctx)
        assert decision == Decision(False, ("sod-approver-not-author",), ())
    other = user("approver", prod={"approver"})
    req = Resource.publish_request("pr1", author="author", requester="author", target="prod")
    assert engine.decide(other, "publish.approve", req, ctx) == Decision(True, ("approver-approve-publish",), ())


def test_makers_never_publish_or_deploy_to_production(engine: PolicyEngine) -> None:
    ctx = PolicyContext("prod", PROD)
    maker = user("m", prod={"maker"})
    req = Resource.publish_request("pr", author="x", requester="y", target="prod")
    assert engine.decide(maker, "bundle.publish", req, ctx) == Decision(False, ("sod-maker-cannot-publish",), ())
    # the direct routes to production are closed for everyone, admins included
    for who in (maker, user("root", everywhere={"admin"})):
        for action, rule in (
            ("bundle.deploy", "sod-no-deploy-to-production"),
            ("bundle.promote", "sod-no-promote-to-production"),
        ):
            decision = engine.decide(who, action, Resource.environment("prod", PROD), ctx)
            assert decision == Decision(False, (rule,), ()), (who.id, action)
    # the environment's own tier counts even if the context forgot it
    admin = user("root", everywhere={"admin"})
    assert not engine.decide(
        admin, "bundle.deploy", Resource.environment("prod", PROD), PolicyContext("prod", "")
    ).allowed
    # a maker who is also an operator there may carry out an approved publish (someone else approved it)
    both = user("mo", prod={"maker", "operator"})
    assert engine.decide(both, "bundle.publish", req, ctx) == Decision(True, ("operator-run",), ())


def test_change_window_and_override(engine: PolicyEngine) -> None:
    closed = PolicyContext("prod", PROD, in_change_window=False)
    req = Resource.publish_request("pr", author="x", requester="y", target="prod")
    approver = user("ap", prod={"approver"})
    admin = user("ad", prod={"admin"})
    assert engine.decide(approver, "bundle.publish", req, closed) == Decision(False, ("change-window",), ())
    assert engine.decide(approver, "bundle.publish", req, PolicyContext("prod", PROD)).allowed
    assert engine.decide(admin, "bundle.publish", req, closed) == Decision(True, ("admin-all",), ())
    env = Resource.environment("prod", PROD)
    assert engine.decide(admin, "release.override_window", env, closed).allowed
    for role in ROLES[1:]:
        who = user(role, prod={role})
        assert engine.decide(who, "release.override_window", env, closed) == Decision(
            False, ("override-window-admin-only",), ()
        )
    # rollback is never held back by a closed window: it is how an incident is stopped
    operator = user("op", prod={"operator"})
    assert engine.decide(operator, "release.rollback", env, closed).allowed


# ---- tokens, callers and bad requests -------------------------------------------------------------------


def test_token_scopes_only_narrow_even_for_admins(engine: PolicyEngine) -> None:
    def admin_with(*scopes: str) -> Principal:
        return Principal(
            kind="user", id="root", roles={"*": frozenset({"admin"})}, scopes=frozenset(scopes), token_id="t1"
        )

    env = Resource.environment("prod", PROD)
    ctx = PolicyContext("prod", PROD)
    assert engine.decide(admin_with("release.*"), "release.rollback", env, ctx).allowed
    assert engine.decide(admin_with("release.*"), "session.read", env, ctx) == Decision(False, ("token-scope",), ())
    assert engine.decide(admin_with("audit.read"), "audit.read", Resource.audit_log(), PolicyContext()).allowed
    assert engine.decide(admin_with("*"), "session.read", env, ctx).allowed
    # scopes never add: a maker's "*" token still cannot roll back production
    maker = Principal(kind="user", id="m", roles={"prod": frozenset({"maker"})}, scopes=frozenset({"*"}), token_id="t2")
    assert not engine.decide(maker, "release.rollback", env, ctx).allowed
    # a caller-side scope verdict can only narrow further
    assert not engine.decide(admin_with("*"), "session.read", env, PolicyContext("prod", PROD, scope_ok=False)).allowed
    assert not engine.decide(
        admin_with("audit.read"), "session.read", env, PolicyContext("prod", PROD, scope_ok=True)
    ).allowed


def test_scope_patterns() -> None:
    assert scopes_cover({"bundle.*"}, "bundle.publish") and not scopes_cover({"bundle.*"}, "publish.approve")
    assert scopes_cover({"dlp.exception.*"}, "dlp.exception.grant") and scopes_cover({"dlp.*"}, "dlp.exception.grant")
    assert scopes_cover({"*"}, "call.start") and not scopes_cover(set(), "call.start")
    assert not scopes_cover({"bundle.rea"}, "bundle.read") and not scopes_cover({"bundle"}, "bundle.read")
    assert validate_scopes(["audit.read", "bundle.*", "audit.read"]) == ["audit.read", "bundle.*"]
    with pytest.raises(ValueError, match=r"'bundle\.\*\*' covers no action.*release\.\*"):
        validate_scopes(["bundle.**"])


def test_callers_may_only_start_calls(engine: PolicyEngine) -> None:
    caller = Principal.caller("session-1")
    ctx = PolicyContext("prod", PROD)
    assert engine.decide(caller, "call.start", Resource.agent("harbor-support"), ctx) == Decision(
        True, ("caller-start-call",), ()
    )
    for action in ENV_ACTIONS:
        if action == "call.start":
            continue
        decision = engine.decide(caller, action, resource_for(action, "prod"), ctx)
        assert not decision.allowed and decision.errors, action
    # a signed-in user may too (a test call), through its own policy
    assert engine.decide(
        user("d", prod={"desk_agent"}), "call.start", Resource.agent("harbor-support"), ctx
    ) == Decision(True, ("user-start-call",), ())


def test_bad_requests_are_denied_with_an_error(engine: PolicyEngine) -> None:
    admin = user("root", everywhere={"admin"})
    ctx = PolicyContext("dev", DEV)
    unknown = engine.decide(admin, "bundle.delete", Resource.environment("dev", DEV), ctx)
    assert not unknown.allowed and "unknown action 'bundle.delete'" in unknown.errors[0]
    wrong_type = engine.decide(admin, "bundle.read", Resource.environment("dev", DEV), ctx)
    assert not wrong_type.allowed and "decided on a Bundle, not a Environment" in wrong_type.errors[0]
    missing = engine.decide(admin, "bundle.read", Resource("Bundle", "b1", {"author": "x"}), ctx)
    assert not missing.allowed and "Bundle 'b1'" in missing.errors[0]
    # a well-shaped bundle passes; the same shape with a wrong type is still caught afterwards
    assert engine.decide(admin, "bundle.read", Resource.bundle("b2", "x", "a"), ctx).allowed
    wrong_kind = engine.decide(admin, "bundle.read", Resource("Bundle", "b3", {"author": 7, "agent": "a"}), ctx)
    assert not wrong_kind.allowed and wrong_kind.errors
    with pytest.raises(ValueError, match="tier: 'staging' is not one of"):
        PolicyContext("dev", "staging")


def test_undeclared_attributes_are_ignored_not_trusted(engine: PolicyEngine) -> None:
    """Validated policies cannot read an attribute the schema lacks, so one passed along is dropped."""
    caller = Principal.caller()
    agent = Resource("Agent", "harbor-support", {"environment": "prod"})
    assert engine.decide(caller, "call.start", agent, PolicyContext("prod", PROD)).allowed
    admin = user("root", everywhere={"admin"})
    assert engine.decide(admin, "audit.read", Resource("AuditLog", "global", {"tier": ""}), PolicyContext()).allowed
    # a User resource needs no attributes: only who it is matters
    bare = engine.decide(admin, "token.manage_own", Resource("User", "you", {"tier": ""}), PolicyContext())
    assert bare == Decision(False, ("own-tokens-only",), ())


def test_decisions_are_the_same_without_the_entity_cache(engine: PolicyEngine) -> None:
    cold = PolicyEngine.load(entity_cache_size=0)
    for role in ROLES:
        principal = user(role, dev={role}, prod={role, "tester"})
        for env, tier in ENVIRONMENTS.items():
            for action in ENV_ACTIONS:
                args = (principal, action, resource_for(action, env), PolicyContext(env, tier))
                assert engine.decide(*args) == cold.decide(*args), (role, env, action)


def test_the_engine_decides_exactly_as_plain_cedar_over_all_policies(engine: PolicyEngine) -> None:
    """The engine's shortcuts (per-action/per-role policy subsets, entity memos, schema checks once
    per shape) must not change any decision or reason: compare with cedarpy given the whole
    policy text, the schema and freshly built entities for every request."""
    import random

    import cedarpy

    texts = [p.read_text() for p in sorted(DEFAULT_POLICY_DIR.glob("*.cedar"))]
    full = "\n".join(texts)
    schema = (DEFAULT_POLICY_DIR / "schema.cedarschema").read_text()
    rng = random.Random(7)
    people = [user(f"{r}-{e}", **{e: {r}}) for r in ROLES for e in ("dev", "test", "prod", "everywhere")]
    people += [
        user(f"mix{i}", **{e: set(rng.sample(ROLES, rng.randint(1, 3))) for e in ("dev", "prod")}) for i in range(12)
    ]
    people += [
        Principal(
            kind="user", id="tok", roles={"*": frozenset({"admin"})}, scopes=frozenset({"bundle.*"}), token_id="t"
        ),
        Principal.caller("c1"),
    ]
    compared = 0
    for _ in range(1500):
        who = rng.choice(people)
        action = rng.choice(list(ACTIONS))
        env = rng.choice(list(ENVIRONMENTS))
        if action in GLOBAL_ACTIONS:
            target = {
                "user.read": Resource.directory(),
                "user.manage": Resource.directory(),
                "audit.read": Resource.audit_log(),
            }.get(action) or Resource.user(rng.choice(["mix1", who.id]))
            ctx = PolicyContext(in_change_window=rng.random() < 0.7)
        else:
            target = resource_for(action, env)
            if target.type == "PublishRequest" and rng.random() < 0.3:
                target = Resource.publish_request("pr9", author=who.id, requester="z", target=env)
            ctx = PolicyContext(env, ENVIRONMENTS[env], in_change_window=rng.random() < 0.7)
        got = engine.decide(who, action, target, ctx)
        if who.kind == "caller" and action != "call.start":
            assert not got.allowed and got.errors
            continue
        kind = "User" if who.kind == "user" else "Caller"
        roles = sorted(who.roles_in(ctx.environment or None))
        entities = [
            {
                "uid": {"type": kind, "id": who.id},
                "attrs": {"id": who.id, "roles": roles} if kind == "User" else {},
                "parents": [],
            }
        ]
        if not (target.type == kind and target.id == who.id):
            attrs = dict(target.attrs) or ({"id": target.id, "roles": []} if target.type == "User" else {})
            entities.append({"uid": {"type": target.type, "id": target.id}, "attrs": attrs, "parents": []})
        scope_ok = who.scopes is None or scopes_cover(who.scopes, action)
        request = {
            "principal": {"type": kind, "id": who.id},
            "action": {"type": "Action", "id": action},
            "resource": {"type": target.type, "id": target.id},
            "context": {
                "environment": ctx.environment,
                "tier": ctx.tier,
                "in_change_window": ctx.in_change_window,
                "scope_ok": scope_ok,
            },
        }
        reference = cedarpy.is_authorized(request, full, entities, schema)
        assert not reference.diagnostics.errors, reference.diagnostics.errors
        names = reference.diagnostics.id_annotations_by_reason
        expected_reasons = {names[r] for r in reference.diagnostics.reasons}
        assert (got.allowed, set(got.reasons), got.errors) == (reference.allowed, expected_reasons, ()), (
            who,
            action,
            target,
            ctx,
        )
        compared += 1
    assert compared > 1000


# ---- loading ----------------------------------------------------------------------------------------------


@pytest.fixture()
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    return target


def test_packaged_policies_load_with_ids_and_a_digest(engine: PolicyEngine, policy_dir: Path) -> None:
    assert "admin-all" in engine.policy_ids and "sod-approver-not-author" in engine.policy_ids
    assert len(engine.policy_ids) == len(set(engine.policy_ids))
    assert engine.policy_digest.startswith("sha256:") and len(engine.policy_digest) == 7 + 64
    copy = PolicyEngine.load(policy_dir)
    assert copy.policy_digest == engine.policy_digest
    with (policy_dir / "roles.cedar").open("a") as f:
        f.write("\n// a comment changes the digest too\n")
    assert PolicyEngine.load(policy_dir).policy_digest != engine.policy_digest


def test_a_directory_loaded_before_is_not_validated_again_and_a_changed_one_is(
    policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Policies are parsed and validated once per content: loading the same files again (a worker opening its
    governance again) reuses that work in a fresh engine; any change to a file is read, checked and refused."""
    first = PolicyEngine.load(policy_dir)
    validations: list[str] = []
    real = cedarpy.validate_policies

    def counted(policies: str, schema: Any) -> Any:
        validations.append(policies)
        return real(policies, schema)

    monkeypatch.setattr(cedarpy, "validate_policies", counted)
    again = PolicyEngine.load(policy_dir)
    assert validations == [] and again is not first
    assert again.policy_ids == first.policy_ids and again.policy_digest == first.policy_digest
    maker = user("u1", dev={"maker"})
    dev = PolicyContext("dev", ENVIRONMENTS["dev"])
    assert again.decide(maker, "bundle.deploy", resource_for("bundle.deploy", "dev"), dev).allowed
    assert not again.decide(
        maker, "bundle.deploy", resource_for("bundle.deploy", "prod"), PolicyContext("prod", "production")
    ).allowed
    roles = policy_dir / "roles.cedar"
    roles.write_text(roles.read_text().replace('resource.tier == "test"', 'resource.tierr == "test"'))
    with pytest.raises(PolicyLoadError, match="tierr"):
        PolicyEngine.load(policy_dir)
    assert validations  # the changed files were validated (and refused)


def _load_error(policy_dir: Path) -> str:
    with pytest.raises(PolicyLoadError) as info:
        PolicyEngine.load(policy_dir)
    return str(info.value)


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_an_unknown_attribute_fails_load_with_file_and_line(policy_dir: Path) -> None:
    roles = policy_dir / "roles.cedar"
    roles.write_text(roles.read_text().replace('resource.tier == "test"', 'resource.tierr == "test"'))
    message = _load_error(policy_dir)
    line = _line_of(roles, "resource.tierr")
    assert f"roles.cedar:{line}:" in message
    assert "'tester-promote-test'" in message and "tierr" in message


def test_an_unknown_action_fails_load_with_file_and_line(policy_dir: Path) -> None:
    sod = policy_dir / "separation_of_duties.cedar"
    sod.write_text(
        sod.read_text().replace('Action::"publish.approve", resource is', 'Action::"publish.aprove", resource is')
    )
    message = _load_error(policy_dir)
    assert f"separation_of_duties.cedar:{_line_of(sod, 'publish.aprove')}:" in message
    assert "publish.aprove" in message


def test_a_syntax_error_fails_load_with_file_and_line(policy_dir: Path) -> None:
    callers = policy_dir / "callers.cedar"
    callers.write_text(
        callers.read_text() + '\n@id("broken")\npermit (principal, action, resource)\nwhen { principal == };\n'
    )
    message = _load_error(policy_dir)
    assert f"callers.cedar:{_line_of(callers, 'principal == }')}: Cedar syntax error" in message


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("permit (principal, action, resource);", 'needs an @id("...")'),
        ('@id("admin-all")\npermit (principal, action, resource);', "is already used at "),
    ],
)
def test_every_policy_needs_a_unique_id(policy_dir: Path, extra: str, fragment: str) -> None:
    (policy_dir / "zz_extra.cedar").write_text("// extra\n\n" + extra + "\n")
    message = _load_error(policy_dir)
    assert f"{policy_dir / 'zz_extra.cedar'}:3:" in message and fragment in message
    if "already" in fragment:
        roles = policy_dir / "roles.cedar"
        first = _line_of(roles, '@id("admin-all")')
        assert f"already used at {roles}:{first}" in message


def test_strings_with_semicolons_and_comment_markers_do_not_confuse_the_loader(policy_dir: Path) -> None:
    (policy_dir / "zz_odd.cedar").write_text(
        '// a comment; with a semicolon\n@id("odd; id // not a comment")\n'
        'permit (principal is User, action == Action::"voice.stats", resource)\n'
        'when { principal.id == "a;b\\"c // d" };\n'
    )
    engine = PolicyEngine.load(policy_dir)
    odd = Principal(kind="user", id='a;b"c // d')
    decision = engine.decide(odd, "voice.stats", Resource.environment("dev", DEV), PolicyContext("dev", DEV))
    assert decision == Decision(True, ("odd; id // not a comment",), ())


def test_schema_must_match_the_action_catalogue(policy_dir: Path) -> None:
    schema = policy_dir / "schema.cedarschema"
    original = schema.read_text()
    schema.write_text(original.replace('action "audit.read" appliesTo', 'action "audit.reads" appliesTo'))
    message = _load_error(policy_dir)
    assert "schema.cedarschema" in message and "audit.read (resource AuditLog)" in message
    schema.write_text(
        original.replace(
            "entity Directory;",
            'entity Directory;\naction "user.delete" appliesTo { principal: [User], resource: [Directory], context: RequestContext };',
        )
    )
    assert "actions not in governance/actions.py: user.delete" in _load_error(policy_dir)


def test_broken_or_missing_files_fail_clearly(policy_dir: Path, tmp_path: Path) -> None:
    schema = policy_dir / "schema.cedarschema"
    schema.write_text(
        schema.read_text().replace("author: String,\n  agent: String,", "author: Strng,\n  agent: String,")
    )
    message = _load_error(policy_dir)
    assert f"schema.cedarschema:{_line_of(schema, 'Strng')}: invalid Cedar schema" in message
    schema.unlink()
    assert "needs a Cedar schema named schema.cedarschema" in _load_error(policy_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(DEFAULT_POLICY_DIR / "schema.cedarschema", empty)
    assert "no *.cedar policy files" in _load_error(empty)
    assert "policy directory not found" in _load_error(tmp_path / "nowhere")
    (empty / "bad.cedar").write_bytes(b"\xff\xfe permit")
    assert "bad.cedar: not UTF-8 text" in _load_error(empty)


def test_a_forbid_that_errors_at_evaluation_denies(tmp_path: Path) -> None:
    """Cedar skips a policy whose evaluation fails; the engine must not let a skipped forbid allow."""
    d = tmp_path / "policies"
    d.mkdir()
    shutil.copy(DEFAULT_POLICY_DIR / "schema.cedarschema", d)
    (d / "p.cedar").write_text(
        '@id("all")\npermit (principal, action, resource);\n'
        '@id("overflow")\nforbid (principal, action == Action::"voice.stats", resource)\n'
        "when { 9223372036854775807 + 1 > 0 };\n"
    )
    engine = PolicyEngine.load(d)
    who = user("u")
    decision = engine.decide(who, "voice.stats", Resource.environment("dev", DEV), PolicyContext("dev", DEV))
    assert not decision.allowed and decision.errors and "overflow" in " ".join(decision.errors)
    assert engine.decide(who, "handoff.read", Resource.environment("dev", DEV), PolicyContext("dev", DEV)).allowed
