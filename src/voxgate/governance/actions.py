"""The catalogue of actions voxgate authorises: one name per thing a principal may try to do.

Every API route and CLI command maps to exactly one of these; the Cedar policies in
`governance/policies/` decide them (deny by default). The catalogue is also what the
route × role matrix test iterates over, so an action added here without a policy shows up as
denied for everyone, never as silently allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "maker", "tester", "approver", "operator", "desk_agent", "auditor", "compliance_officer")


@dataclass(frozen=True)
class ActionInfo:
    """One action of the catalogue: its name, the Cedar entity type it acts on, and what it does."""

    name: str
    resource: str  # the Cedar entity type of the resource
    description: str


ACTIONS: dict[str, ActionInfo] = {
    a.name: a
    for a in (
        # identity
        ActionInfo("user.read", "Directory", "list users and their role bindings"),
        ActionInfo("user.manage", "Directory", "create or disable users, bind and unbind roles"),
        ActionInfo("token.manage_own", "User", "create, list and revoke one's own API tokens and signing keys"),
        # environments and policy
        ActionInfo("environment.read", "Environment", "see environments, their settings and active bundles"),
        ActionInfo("policy.read", "Environment", "see an environment's DLP policy and exceptions"),
        ActionInfo("dlp.exception.grant", "Environment", "grant or revoke a time-limited DLP exception"),
        # bundles and releases
        ActionInfo("bundle.read", "Bundle", "list, inspect, verify and diff bundles"),
        ActionInfo("bundle.upload", "Environment", "store a bundle built and signed for an environment"),
        ActionInfo("bundle.deploy", "Environment", "make a bundle active in a development environment"),
        ActionInfo("bundle.promote", "Environment", "promote the bundle active in the previous environment"),
        ActionInfo("publish.request", "Environment", "ask for a bundle to be published to a production environment"),
        ActionInfo("publish.approve", "PublishRequest", "approve or reject a publish request"),
        ActionInfo("bundle.publish", "PublishRequest", "carry out an approved publish"),
        ActionInfo("release.rollback", "Environment", "make the previous release active again"),
        ActionInfo("release.override_window", "Environment", "publish or roll back outside the change window"),
        ActionInfo("release.read", "Environment", "see the release history and publish requests"),
        # audit and records
        ActionInfo("audit.read", "AuditLog", "read, verify and export the audit chain"),
        ActionInfo("session.read", "Environment", "read stored sessions and their redacted transcripts"),
        ActionInfo("handoff.read", "Environment", "see the handoff queue and context packets"),
        ActionInfo(
            "handoff.accept",
            "Environment",
            "take callers at the live-agent desk (availability, accept, talk, wrap up) and complete callbacks",
        ),
        ActionInfo("desk.manage", "Environment", "set the skills desk agents are routed by"),
        ActionInfo("voice.stats", "Environment", "read or reset a worker's voice timings and metrics"),
        ActionInfo(
            "cluster.read", "Environment", "see the cluster's workers and each environment's calls against its limits"
        ),
        ActionInfo("analytics.read", "Environment", "read outcome analytics and KPIs"),
        ActionInfo("incident.read", "Environment", "see incidents opened by alerts, with their timelines"),
        ActionInfo("incident.manage", "Environment", "acknowledge, mitigate or resolve an incident"),
        ActionInfo(
            "privacy.manage",
            "Environment",
            "find, erase or place legal holds on a data subject's records (data-subject requests)",
        ),
        ActionInfo("retention.run", "Environment", "run the retention purge now"),
        ActionInfo("recording.read", "Environment", "listen to or export an encrypted call recording"),
        # callers (anonymous principals on public channels)
        ActionInfo("call.start", "Agent", "start a conversation with a served agent (chat or voice)"),
    )
}
