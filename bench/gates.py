"""Run all six pre-production gates on harbor-support in a throwaway world and print their run times.

Builds and signs the Harbor bundle twice (so a rollback has somewhere to go), deploys and
promotes both to test in a temporary SQLite database, starts the Harbor backend, then runs each
gate prod requires exactly as `voxgate gates run` does and prints status, cases and seconds;
the load gate's voice-to-voice figures too.

    .venv/bin/python bench/gates.py [--calls 4] [--duration 30] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from voxgate.api.gate_worker import LocalWorkers
from voxgate.config import Settings
from voxgate.governance import bundle_store, gates
from voxgate.governance.dlp import host_policy_for
from voxgate.governance.environments import GateSpec
from voxgate.governance.principals import Principal
from voxgate.governance.secrets import resolve_secret
from voxgate.governance.setup import open_governance
from voxgate.runtime.engine import AgentRuntime
from voxgate.signing import KeyPair
from voxgate.store.db import Database
from voxgate.testing.conversations import load_fixtures
from voxgate.testing.gates import RUNNERS

AGENT = Path(__file__).resolve().parents[1] / "examples" / "harbor-telecom" / "agents" / "harbor-support"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from harbor_backend import BackgroundServer

    with tempfile.TemporaryDirectory(prefix="voxgate-gates-bench-") as tmp_name:
        tmp = Path(tmp_name)
        key = secrets.token_urlsafe(16)
        with BackgroundServer(tmp / "harbor.db", key) as backend:
            os.environ["HARBOR_API_KEY"], os.environ["HARBOR_API_URL"] = key, backend.url
            settings = Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'voxgate.db'}")
            db = Database(settings.db_url)
            db.migrate()
            gov = open_governance(settings, db)
            author = gov.identity.create_user("bench-maker", "a long enough password")
            actor = Principal(kind="user", id=author.id)
            pair = KeyPair.generate()
            bundle_store.register_signing_key(db, pair.public, author.id)
            agent_dir = tmp / "harbor-support"
            shutil.copytree(AGENT, agent_dir)
            digests = []
            for version in ("1.0.0", "1.0.1"):
                yaml = agent_dir / "agent.yaml"
                yaml.write_text(yaml.read_text().replace("version: 1.0.0", f"version: {version}"))
                built = bundle_store.build_bundle(agent_dir, gov.config.get("test"), [], pair, author.id)
                bundle_store.store_bundle(db, built, uploaded_by=author.id)
                gov.releases.deploy("dev", "harbor-support", built.digest, actor)
                gov.releases.promote("harbor-support", "test", actor)
                digests.append(built.digest)
            digest = digests[-1]
            stored = bundle_store.load_stored(db, digest)
            test_env, prod_env = gov.config.get("test"), gov.config.get("prod")
            fixtures = load_fixtures(
                {"customer": "harbor_backend:demo_credentials", "outage": "harbor_backend.data:draw_outages"}
            )

            def factory() -> AgentRuntime:
                return AgentRuntime(
                    stored.source,
                    environment="test",
                    digest=digest,
                    host_policy=host_policy_for(
                        db, test_env, agent="harbor-support", connectors=stored.source.agent.connectors
                    ),
                    secrets=resolve_secret,
                )

            rows = []
            for spec in prod_env.settings.gates:
                if spec.name == "load":
                    spec = GateSpec(
                        name="load",
                        calls=args.calls,
                        duration_s=args.duration,
                        p95_ms=spec.p95_ms,
                        max_failed_rate=spec.max_failed_rate,
                    )
                ctx = gates.GateContext(
                    digest=digest,
                    bundle=stored.source,
                    target=prod_env,
                    ran_in=test_env,
                    spec=spec,
                    runtime_factory=factory,
                    fixtures=fixtures,
                    db=db,
                    releases=gov.releases,
                    actor=actor,
                    start_worker=LocalWorkers(db.url),
                )
                out = asyncio.run(gates.run_gate(ctx, RUNNERS, actor=actor.audit_actor, audit=gov.audit))
                rows.append(
                    {
                        "gate": spec.name,
                        "status": out.status,
                        "passed": out.suite.get("passed"),
                        "total": out.suite.get("total"),
                        "seconds": round(out.duration_ms / 1000, 2),
                        "metrics": out.suite.get("metrics", {}),
                        "error": out.suite.get("error"),
                    }
                )
            db.dispose()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return
    print(f"{'gate':<13} {'status':<8} {'cases':>9} {'seconds':>8}")
    for r in rows:
        print(
            f"{r['gate']:<13} {r['status']:<8} {r['passed']!s:>4}/{r['total']!s:<4} {r['seconds']:>8.2f}"
            + (f"  {r['error']}" if r["error"] else "")
        )
    load = next((r for r in rows if r["gate"] == "load"), None)
    if load and load["metrics"].get("voice_to_voice_ms"):
        v = load["metrics"]["voice_to_voice_ms"]
        print(
            f"load gate: {load['metrics']['calls']} calls ({args.calls} concurrent, {args.duration:g} s), "
            f"voice-to-voice p50 {v['p50']} ms p95 {v['p95']} ms max {v['max']} ms, "
            f"failed {load['metrics']['failed']}, outcomes {load['metrics']['outcomes']}"
        )


if __name__ == "__main__":
    main()
