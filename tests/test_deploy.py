"""The deployment artifacts hold together: Dockerfile, compose.yaml, HAProxy and the Kubernetes overlays.

Every overlay under deploy/kubernetes/overlays is rendered with `kubectl kustomize`, validated against
the Kubernetes schemas (kubernetes-validate, offline) and scanned by checkov together with the
Dockerfile; each checkov finding is fixed or justified in deploy/checkov-justified.yaml, and a
justification whose finding is gone fails too. hadolint lints the Dockerfile. The rest are the
facts that rot silently when code and manifests drift: the probes ask routes the worker serves on
the port it listens on, the kubelet waits longer than the drain, every VOXGATE_* variable is a
setting voxgate reads (an unknown one is ignored without a word), secrets arrive only by reference,
and the compose cluster and its load balancer name the same workers.

The tools live in their own virtualenv, .venv-deploy (requirements-deploy.in), so checkov's large
dependency tree never touches the application's pins; kubectl is the system's.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from voxgate.api.app import create_app
from voxgate.config import Settings, load_settings
from voxgate.governance.environments import load_governance
from voxgate.governance.policy import PolicyEngine
from voxgate.governance.secrets import secrets_dir, use_secrets_dir

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
HAPROXY = DEPLOY / "haproxy" / "haproxy.cfg"
JUSTIFIED = DEPLOY / "checkov-justified.yaml"
PACKAGED_POLICY = ROOT / "src" / "voxgate" / "governance" / "policies"
TOOLS = ROOT / ".venv-deploy" / "bin"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are checked against
# custom resources no Kubernetes schema covers: checked by test_the_service_monitor_scrapes_the_workers
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# the sizing the manifests assume (deployment.yaml says so); the capacity doc refines them
MODEL_BASE_MIB = 1.2 * 1024
PER_CALL_MIB = 60
PER_CALL_CORES = 0.1
# settings work in progress adds as these manifests are written: accepted while Settings lacks them,
# and once it has one its entry here must go (the test says so), so the list cannot outlive them
ANNOUNCED_SETTINGS: set[str] = set()
SECRET_NAME_RE = re.compile(r"(PASSWORD|TOKEN|SECRET|_KEY|DATABASE_URL|REDIS_URL|CREDENTIALS)$")


# ---- tools --------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(
            f"{path.relative_to(ROOT)} is missing: the deployment checks' tools (checkov, kubernetes-validate, "
            "hadolint) live in their own virtualenv .venv-deploy, pinned in requirements-deploy.in; "
            "run `make setup` to create it"
        )
    return str(path)


def _kubectl() -> str:
    found = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
    if found is None:
        pytest.fail(
            "kubectl is not installed (Debian package kubectl); the overlays are rendered with `kubectl kustomize`"
        )
    return found


def _run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


# ---- what the artifacts say ---------------------------------------------------------------------


Doc = dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Doc]]]:
    """Each overlay's name -> (its rendered file, its documents)."""
    assert {p.name for p in OVERLAYS} >= {"dev", "prod"}, f"overlays found: {[p.name for p in OVERLAYS]}"
    out = tmp_path_factory.mktemp("rendered")
    kubectl = _kubectl()
    result = {}
    for overlay in OVERLAYS:
        run = _run(kubectl, "kustomize", str(overlay))
        assert run.returncode == 0, f"kubectl kustomize {overlay.relative_to(ROOT)}:\n{run.stderr}"
        path = out / f"{overlay.name}.yaml"
        path.write_text(run.stdout)
        result[overlay.name] = (path, [d for d in yaml.safe_load_all(run.stdout) if d])
    return result


@pytest.fixture(scope="module")
def checkov_findings(rendered: dict[str, tuple[Path, list[Doc]]]) -> set[tuple[str, str]]:
    """(check id, resource) of every failed checkov check on the rendered overlays and the Dockerfile."""
    files = [str(path) for path, _ in rendered.values()]
    run = _run(
        _tool("checkov"),
        "--quiet",
        "--compact",
        "--skip-download",  # offline: no guideline or policy download
        "--framework",
        "kubernetes",
        "dockerfile",
        "-o",
        "json",
        "-f",
        *files,
        str(DOCKERFILE),
    )
    assert run.stdout.strip(), f"checkov printed no report:\n{run.stderr[-3000:]}"
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r for r in reports}
    assert set(by_type) == {"kubernetes", "dockerfile"}, f"checkov scanned {sorted(by_type)}"
    findings = set()
    for check_type, report in by_type.items():
        summary = report["summary"]
        assert summary["parsing_errors"] == 0, f"checkov could not parse a {check_type} file"
        assert summary["passed"] > 0 and summary["resource_count"] > 0, f"checkov checked no {check_type} resource"
        for failed in report["results"]["failed_checks"]:
            findings.add((failed["check_id"], _checkov_resource(check_type, failed["resource"])))
    return findings


def _checkov_resource(check_type: str, resource: str) -> str:
    """A finding's resource as the justification file names it: `Kind/name` (any namespace), or `Dockerfile`."""
    if check_type == "dockerfile":
        return "Dockerfile"
    parts = resource.split(".")
    return f"{parts[0]}/{parts[-1]}"


def _one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container(docs: list[Doc]) -> Doc:
    containers = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the worker pod runs one container"
    return containers[0]


def _settings_env(docs: list[Doc]) -> dict[str, str]:
    """The worker container's environment from its ConfigMaps (envFrom) and literal values."""
    container = _container(docs)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def _settings_fields() -> set[str]:
    return {f"VOXGATE_{name.upper()}" for name in Settings.model_fields}


def _read_by_name() -> set[str]:
    """VOXGATE_* variables the code reads itself, outside Settings (e.g. VOXGATE_MODEL_CACHE)."""
    names: set[str] = set()
    for path in (ROOT / "src" / "voxgate").rglob("*.py"):
        text = path.read_text("utf-8")
        names.update(re.findall(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](VOXGATE_[A-Z0-9_]+)["']""", text))
    return names


def _compose() -> dict[str, Any]:
    """compose.yaml with its ${VAR} interpolations filled with stand-ins (as `docker compose` would from .env)."""
    text = COMPOSE.read_text("utf-8")
    text = re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}", lambda m: f"stand-in-{m.group(1).lower()}", text)
    parsed: dict[str, Any] = yaml.safe_load(text.replace("$$", "$"))
    return parsed


def _compose_workers(compose: dict[str, Any]) -> dict[str, Doc]:
    """The services that run this repository's image (built from the Dockerfile)."""
    return {name: s for name, s in compose["services"].items() if (s.get("build") or {}).get("context") == "."}


def _seconds(value: str | int | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", value.strip())
    assert match, f"not a duration: {value!r}"
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def _cores(value: str | int | float) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _mib(value: str | int) -> float:
    text = str(value)
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text) / 2**20


def _dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into stages."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text("utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[str]] = []
    for instruction in logical:
        if instruction.upper().startswith("FROM "):
            stages.append([])
        assert stages, f"an instruction before the first FROM: {instruction}"
        stages[-1].append(instruction)
    return stages


# ---- Kubernetes ---------------------------------------------------------------------------------


def test_every_overlay_renders_the_whole_worker(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    for name, (_, docs) in rendered.items():
        kinds = {d["kind"] for d in docs}
        expected = {
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Service",
            "Ingress",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
        }
        assert expected <= kinds, f"{name}: missing {sorted(expected - kinds)}"
        assert "Secret" not in kinds, f"{name}: Secrets are created outside the manifests, never rendered by them"
        image = _container(docs)["image"]
        assert re.fullmatch(r"[^:@\s]+@sha256:[0-9a-f]{64}", image), f"{name}: image {image!r} is not by digest"


def test_rendered_documents_match_the_kubernetes_schemas(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    validate = _tool("kubernetes-validate")
    for name, (path, docs) in rendered.items():
        run = _run(validate, "--strict", "-k", KUBERNETES_VERSION, str(path))
        lines = (run.stdout + run.stderr).splitlines()
        problems = [
            line
            for line in lines
            if not line.startswith("INFO")
            and not any(f"kind {kind} with api version {api}" in line for api, kind in CUSTOM_KINDS)
        ]
        assert run.returncode == 0 and not problems, f"{name}:\n" + "\n".join(lines)
        checked = sum(1 for line in lines if line.startswith("INFO") and " passed " in line)
        expected = sum(1 for d in docs if (d["apiVersion"], d["kind"]) not in CUSTOM_KINDS)
        assert checked == expected, f"{name}: {checked} of {expected} documents validated:\n" + "\n".join(lines)


def test_schema_validation_rejects_a_broken_document(tmp_path: Path) -> None:
    # the validator works offline and is strict: a typo'd field and a wrong type both fail
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
        "spec:\n  replicas: two\n  selector: {matchLabels: {a: b}}\n"
        "  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}\n"
    )
    run = _run(_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(broken))
    assert run.returncode != 0 and "replicas" in run.stdout + run.stderr, run.stdout + run.stderr


def test_checkov_findings_are_fixed_or_justified(checkov_findings: set[tuple[str, str]]) -> None:
    entries = yaml.safe_load(JUSTIFIED.read_text("utf-8"))["justified"] or []
    justified = set()
    for entry in entries:
        assert str(entry.get("why", "")).strip(), f"{JUSTIFIED.name}: {entry} has no `why`"
        justified.add((entry["check"], entry["resource"]))
    unjustified = sorted(checkov_findings - justified)
    assert not unjustified, (
        f"checkov findings to fix, or to justify in {JUSTIFIED.relative_to(ROOT)} (check, resource, why): {unjustified}"
    )
    stale = sorted(justified - checkov_findings)
    assert not stale, f"{JUSTIFIED.relative_to(ROOT)} justifies findings checkov no longer reports: {stale}"


def test_probes_ask_what_the_worker_serves_on_its_port(
    rendered: dict[str, tuple[Path, list[Doc]]], tmp_path: Path
) -> None:
    # the worker's GET routes, from the app `voxgate serve` builds (its lifespan is not started)
    previous = secrets_dir()
    try:
        app = create_app(Settings(data_dir=tmp_path), [])
    finally:
        use_secrets_dir(previous)  # create_app points this process's `env:` fallback at the data dir
    get_routes = {path for path, operations in app.openapi()["paths"].items() if "get" in operations}
    port = Settings.model_fields["port"].default
    for name, (_, docs) in rendered.items():
        container = _container(docs)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert _settings_env(docs).get("VOXGATE_PORT", str(port)) == str(port), f"{name}: VOXGATE_PORT"
        probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        for kind, probe in probes.items():
            assert probe["path"] in get_routes, f"{name}: {kind} asks {probe['path']}, which the worker does not serve"
            assert ports.get(probe["port"], probe["port"]) == port, f"{name}: {kind} asks port {probe['port']}"
        assert probes["readinessProbe"]["path"] == "/health/ready", f"{name}: readiness must ask /health/ready"
        assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/health/live", name
        service = _one(docs, "Service")
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"], f"{name}: the Service's targetPort"
    assert "/health/live" in get_routes and "/health/ready" in get_routes


def test_the_kubelet_waits_longer_than_the_drain(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    default_grace = Settings.model_fields["drain_grace_s"].default
    for name, (_, docs) in rendered.items():
        pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
        grace = float(_settings_env(docs).get("VOXGATE_DRAIN_GRACE_S", default_grace))
        pre_stop = _container(docs)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep" and 0 < float(pre_stop[1]) <= 30, f"{name}: preStop {pre_stop}"
        budget = grace + float(pre_stop[1])
        assert pod["terminationGracePeriodSeconds"] > budget, (
            f"{name}: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} must exceed the drain "
            f"grace ({grace} s) plus the preStop sleep ({pre_stop[1]} s), or calls are killed mid-sentence"
        )
    for service, spec in _compose_workers(_compose()).items():
        grace = float(spec["environment"].get("VOXGATE_DRAIN_GRACE_S", default_grace))
        assert _seconds(spec["stop_grace_period"]) > grace, f"compose {service}: stop_grace_period vs the drain"


def test_every_voxgate_variable_is_a_setting_voxgate_reads(
    rendered: dict[str, tuple[Path, list[Doc]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    landed = sorted(ANNOUNCED_SETTINGS & _settings_fields())
    assert not landed, f"{landed} are settings now: remove them from ANNOUNCED_SETTINGS in {Path(__file__).name}"
    known = _settings_fields() | _read_by_name() | ANNOUNCED_SETTINGS
    sources: dict[str, dict[str, str]] = {}
    for name, (_, docs) in rendered.items():
        env = _settings_env(docs)
        for var in _container(docs).get("env", []):
            if "valueFrom" in var:  # secrets: a stand-in of the right shape
                env[var["name"]] = "redis://redis:6379/0" if "REDIS" in var["name"] else "postgresql://u@db/voxgate"
        sources[f"overlay {name}"] = env
    for service, spec in _compose_workers(_compose()).items():
        sources[f"compose {service}"] = {k: str(v) for k, v in spec["environment"].items()}
    sources["Dockerfile"] = dict(
        re.findall(
            r"\b(VOXGATE_[A-Z0-9_]+)=(\S+)", " ".join(i for s in _dockerfile_stages() for i in s if i.startswith("ENV"))
        )
    )
    for where, env in sources.items():
        unknown = sorted(k for k in env if k.startswith("VOXGATE_") and k not in known)
        assert not unknown, (
            f"{where}: {unknown} are not voxgate settings (src/voxgate/config.py); they would be ignored"
        )
        # the values too: the settings load as a worker would load them
        for key in [k for k in os.environ if k.startswith("VOXGATE_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        loaded = load_settings()
        if "VOXGATE_ENVIRONMENT" in env:
            assert loaded.environment == env["VOXGATE_ENVIRONMENT"], where


def test_the_policy_config_map_is_the_packaged_policy_and_loads(
    rendered: dict[str, tuple[Path, list[Doc]]], tmp_path: Path
) -> None:
    base = K8S / "base" / "policies"
    packaged = {p.name: p.read_bytes() for p in PACKAGED_POLICY.iterdir() if p.is_file()}
    copied = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    assert copied == packaged, (
        f"{base.relative_to(ROOT)} must be a copy of {PACKAGED_POLICY.relative_to(ROOT)} (the default an overlay "
        f"replaces): differing {sorted(set(packaged) ^ set(copied) | {n for n in packaged if copied.get(n) != packaged[n]})}"
    )
    run = _run(_kubectl(), "kustomize", str(K8S / "base"))
    assert run.returncode == 0, run.stderr
    (base_policy,) = [
        d for d in yaml.safe_load_all(run.stdout) if d["kind"] == "ConfigMap" and "environments.yaml" in d["data"]
    ]
    assert set(base_policy["data"]) == set(packaged), "the base's policy ConfigMap must carry every packaged file"
    for name, (_, docs) in rendered.items():
        env = _settings_env(docs)
        mounts = {m["mountPath"]: m["name"] for m in _container(docs)["volumeMounts"]}
        volumes = {v["name"]: v for v in _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
        policy_volume = volumes[mounts[env["VOXGATE_POLICY_DIR"]]]
        configmap = next(
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == policy_volume["configMap"]["name"]
        )
        policy_dir = tmp_path / name
        policy_dir.mkdir()
        for filename, content in configmap["data"].items():
            (policy_dir / filename).write_text(content)
        config = load_governance(policy_dir)
        assert env["VOXGATE_ENVIRONMENT"] in config.environments, f"{name}: the policy has no such environment"
        PolicyEngine.load(policy_dir)


def test_secrets_arrive_only_by_reference(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    for name, (_, docs) in rendered.items():
        container = _container(docs)
        for var in container.get("env", []):
            if SECRET_NAME_RE.search(var["name"]):
                assert "secretKeyRef" in var.get("valueFrom", {}), f"{name}: {var['name']} must come from a Secret"
        for configmap in (
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("voxgate-settings")
        ):
            leaked = [k for k in configmap["data"] if SECRET_NAME_RE.search(k)]
            assert not leaked, f"{name}: {leaked} in a ConfigMap; secrets go in a Secret"
        # the installation's keys are one Secret every worker mounts where voxgate looks for them
        env = _settings_env(docs)
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
        keys = mounts[f"{env['VOXGATE_DATA_DIR']}/keys"]
        assert keys.get("readOnly") is True, f"{name}: the keys are mounted read-only"
        items = {i["path"] for i in volumes[keys["name"]]["secret"]["items"]}
        assert items == {"audit-signing-key.pem", "privacy-salt", "recording-master.key"}, f"{name}: {items}"
        assert "secret" in volumes[mounts[env["VOXGATE_SECRETS_DIR"]]["name"]], f"{name}: VOXGATE_SECRETS_DIR"
    # compose: every password is interpolated from .env (or the shell), never written in the file
    raw: dict[str, Any] = yaml.safe_load(COMPOSE.read_text("utf-8"))
    for service, spec in raw["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            secrets_in_url = re.findall(r"://[^:/\s@]*:([^@\s]+)@", str(value))
            for secret in secrets_in_url + ([str(value)] if "PASSWORD" in key else []):
                assert re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}", secret), (
                    f"compose {service}: {key} holds a literal secret; interpolate it from .env"
                )


def test_the_worker_runs_unprivileged_on_a_read_only_root(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    final_stage = _dockerfile_stages()[-1]
    user = [i.split(None, 1)[1] for i in final_stage if i.upper().startswith("USER ")][-1]
    uid = int(user.split(":")[0])
    for name, (_, docs) in rendered.items():
        pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
        container = _container(docs)
        security = container["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == uid, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"] and "add" not in security["capabilities"], name
        assert pod["automountServiceAccountToken"] is False, name
        account = _one(docs, "ServiceAccount")
        assert (
            pod["serviceAccountName"] == account["metadata"]["name"]
            and account["automountServiceAccountToken"] is False
        )
        # what a worker writes goes to emptyDirs: /tmp, the data directory, the model cache
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        env = _settings_env(docs)
        model_cache = env["VOXGATE_MODEL_CACHE"]
        writable = ["/tmp", env["VOXGATE_DATA_DIR"], next(p for p in mounts if model_cache.startswith(p + "/"))]
        for path in writable:
            assert "emptyDir" in mounts[path], f"{name}: {path} must be an emptyDir"


def test_the_autoscaler_scales_on_calls_per_worker(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    metrics_source = (ROOT / "src" / "voxgate" / "observe" / "metrics.py").read_text("utf-8")
    for name, (_, docs) in rendered.items():
        deployment, hpa, pdb = (_one(docs, k) for k in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"))
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns the replica count; apply would reset it"
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"], name
        pods = [m["pods"] for m in spec["metrics"] if m["type"] == "Pods"]
        assert [p["metric"]["name"] for p in pods] == ["voxgate_active_calls"], f"{name}: scale on calls per worker"
        assert '"voxgate_active_calls"' in metrics_source, "the worker no longer exports voxgate_active_calls"
        capacity = int(
            _settings_env(docs).get("VOXGATE_VOICE_CAPACITY", Settings.model_fields["voice_capacity"].default)
        )
        target = _cores(pods[0]["target"]["averageValue"])
        assert 0 < target < capacity, f"{name}: scale before the workers are full ({target} of {capacity} calls)"
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in spec["metrics"]), name
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        for selector in (pdb["spec"]["selector"]["matchLabels"], _one(docs, "Service")["spec"]["selector"]):
            assert selector.items() <= pod_labels.items(), f"{name}: {selector} does not select the workers"


def test_resources_cover_the_calls_a_worker_accepts(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    for name, (_, docs) in rendered.items():
        env = _settings_env(docs)
        capacity = int(env.get("VOXGATE_VOICE_CAPACITY", Settings.model_fields["voice_capacity"].default))
        resources = _container(docs)["resources"]
        cpu = _cores(resources["requests"]["cpu"])
        memory = _mib(resources["requests"]["memory"])
        assert cpu >= capacity * PER_CALL_CORES, f"{name}: {cpu} cores requested for {capacity} calls"
        assert memory >= MODEL_BASE_MIB + capacity * PER_CALL_MIB, f"{name}: {memory:.0f} MiB for {capacity} calls"
        assert _mib(resources["limits"]["memory"]) >= memory and _cores(resources["limits"]["cpu"]) >= cpu, name
        speech_workers = int(env["VOXGATE_SPEECH_WORKERS"])  # the default (every core of the node) would oversubscribe
        assert 1 <= speech_workers <= math.ceil(cpu), f"{name}: {speech_workers} speech threads on {cpu} cores"


def test_the_ingress_keeps_call_sockets_open(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    for name, (_, docs) in rendered.items():
        ingress = _one(docs, "Ingress")
        notes = ingress["metadata"]["annotations"]
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600, f"{name}: {key}"
        sticky = [k for k in notes if k.endswith(("/affinity", "/upstream-hash-by", "/session-cookie-name"))]
        assert not sticky, f"{name}: workers are stateless, no stickiness: {sticky}"
        service = _one(docs, "Service")
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"], name
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}, name


def test_the_service_monitor_scrapes_the_workers(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    monitors = [(name, d) for name, (_, docs) in rendered.items() for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitors, "no overlay scrapes the workers: the autoscaler's metric would be missing"
    for name, monitor in monitors:
        docs = rendered[name][1]
        service = _one(docs, "Service")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items(), name
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        credentials = endpoint["authorization"]["credentials"]
        assert credentials["name"] and credentials["key"], f"{name}: /metrics needs a bearer token from a Secret"


# ---- Dockerfile ---------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    run = _run(_tool("hadolint"), "--no-color", str(DOCKERFILE))
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_dockerfile_keeps_its_rules() -> None:
    stages = _dockerfile_stages()
    text = DOCKERFILE.read_text("utf-8")
    assert len(stages) >= 2, "multi-stage: the final image carries the virtualenv, not the build"
    python = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text()).group(1)  # type: ignore[union-attr]
    for stage in stages:
        base = stage[0].split()[1]
        match = re.fullmatch(r"([\w./-]+):([\w.-]+)@sha256:[0-9a-f]{64}", base)
        assert match, f"{stage[0]}: the base must be pinned by version and digest"
        assert match.group(2) != "latest" and match.group(2).startswith(python + "."), f"{base}: Python {python}.x"
    assert not re.search(r"(?i):latest\b", text), "no `latest` tag"
    assert not re.search(r"\b(curl|wget)\b[^\n|]*\|\s*(ba|z|da)?sh\b", text), "no piping a download into a shell"
    installs = [i for s in stages for i in s if re.search(r"pip install", i)]
    for install in installs:
        for part in re.split(r"&&|;", install):
            if re.search(r"-r\s+requirements[\w.-]*\.lock", part):
                assert "--require-hashes" in part and "--no-deps" in part, (
                    f"a lock installed without its hashes: {part}"
                )
    assert any("-r requirements.lock" in i for i in installs) and any(
        "--no-deps" in i and "/src" in i for i in installs
    )
    final = stages[-1]
    users = [i.split(None, 1)[1] for i in final if i.upper().startswith("USER ")]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), f"the final stage's USER must be numeric: {users}"
    assert any(re.fullmatch(r'ENTRYPOINT \["voxgate",\s*"serve"\]', i) for i in final), "ENTRYPOINT"
    assert f"EXPOSE {Settings.model_fields['port'].default}" in final, "EXPOSE the worker's port"
    assert any(i.startswith("HEALTHCHECK ") for i in final), "HEALTHCHECK"
    assert "/health/live" in (DEPLOY / "docker" / "healthcheck.py").read_text("utf-8")
    assert "ARG PIPER=0" in stages[0], "Piper (GPL-3.0) is off unless the build asks for it"


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(p, pattern) or fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for stage in _dockerfile_stages():
        for instruction in stage:
            words = instruction.split()
            if words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
                copied += [w for w in words[1:-1] if not w.startswith("--")]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not _docker_ignored(source, patterns), f"COPY {source}: .dockerignore leaves it out"
    for private in (
        ".env",
        ".venv/bin/python",
        ".venv-deploy/bin/checkov",
        "var/voxgate.db",
        ".git/config",
        "tests/conftest.py",
    ):
        assert _docker_ignored(private, patterns), f"{private} would be sent to the image build"


class _Probe(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # the standard library's name for it
        self.paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # a quiet test server
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[int, type[_Probe]]]:
    handler = type("Probe", (_Probe,), {"paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_image_health_check_follows_liveness(probe_server: tuple[int, type[_Probe]]) -> None:
    port, handler = probe_server
    script = str(DEPLOY / "docker" / "healthcheck.py")
    env = {**os.environ, "VOXGATE_PORT": str(port)}
    ok = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    handler.status = 503
    down = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert down.returncode == 1 and "503" in down.stderr
    assert handler.paths == ["/health/live", "/health/live"]


def test_the_image_health_check_fails_when_nothing_listens(probe_server: tuple[int, type[_Probe]]) -> None:
    port, _ = probe_server
    env = {**os.environ, "VOXGATE_PORT": "1"}  # a privileged port nothing here listens on
    run = subprocess.run(
        [sys.executable, str(DEPLOY / "docker" / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 1 and "/health/live" in run.stderr


# ---- compose and HAProxy ------------------------------------------------------------------------


def test_compose_runs_postgres_redis_two_workers_and_haproxy() -> None:
    compose = _compose()
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:15"), services["postgres"]["image"]
    assert services["redis"]["image"].startswith("redis:7"), services["redis"]["image"]
    assert services["haproxy"]["image"].startswith("haproxy:"), services["haproxy"]["image"]
    workers = _compose_workers(compose)
    assert len(workers) == 2, f"two workers, found {sorted(workers)}"
    for name, worker in workers.items():
        assert worker["environment"]["VOXGATE_DATABASE_URL"].startswith("postgresql://"), name
        assert worker["environment"]["VOXGATE_REDIS_URL"].startswith("redis://"), name
        assert worker["environment"]["VOXGATE_VOICE_PRELOAD"] == "true", name
        for dependency in ("postgres", "redis"):
            assert worker["depends_on"][dependency]["condition"] == "service_healthy", f"{name} waits for {dependency}"
        # one keys volume for every worker: the privacy salt and recording key are the installation's
        assert "keys:/var/lib/voxgate/keys" in worker["volumes"], name
    mounts = services["haproxy"]["volumes"]
    assert any(m.startswith("./deploy/haproxy/haproxy.cfg:") for m in mounts), mounts


def _haproxy() -> dict[str, list[list[str]]]:
    """haproxy.cfg as section header -> its lines, split into words."""
    sections: dict[str, list[list[str]]] = {}
    current = None
    for raw in HAPROXY.read_text("utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not raw[0].isspace():
            current = line
            sections[current] = []
        else:
            assert current is not None, raw
            sections[current].append(line.split())
    return sections


def test_haproxy_balances_round_robin_and_keeps_sockets_open(rendered: dict[str, tuple[Path, list[Doc]]]) -> None:
    sections = _haproxy()
    defaults = sections["defaults"]
    backends = [s for s in sections if s.startswith("backend ")]
    assert len(backends) == 1, backends
    backend = sections[backends[0]]
    timeouts = {line[1]: _seconds(line[2]) for line in defaults + backend if line[0] == "timeout"}
    assert timeouts["tunnel"] >= 3600, "a call's WebSocket stays open up to an hour"
    assert timeouts["http-keep-alive"] < Settings.model_fields["http_keep_alive_s"].default, "HAProxy closes first"
    assert ["balance", "roundrobin"] in backend
    assert not [line for line in backend if line[0] in {"cookie", "stick", "stick-table", "hash-type"}], "no stickiness"
    readiness = _container(next(iter(rendered.values()))[1])["readinessProbe"]["httpGet"]["path"]
    assert ["http-check", "send", "meth", "GET", "uri", readiness] in backend, "health check on readiness"
    assert ["http-check", "expect", "status", "200"] in backend
    servers = {line[1]: line[2] for line in backend if line[0] == "server"}
    port = Settings.model_fields["port"].default
    assert servers == {name: f"{name}:{port}" for name in _compose_workers(_compose())}, servers
    assert all("check" in line for line in backend if line[0] == "server"), "every server is health-checked"
