"""deploy/, the pre-commit config and docs/operations.md stay true to the code (no Docker here: static checks)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), ROOT / ".pre-commit-config.yaml"])


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in DEPLOY.joinpath("k8s").rglob("*.yaml") for doc in _docs(path) if "kind" in doc]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    assert _docs(path), f"{path} is empty"


@pytest.mark.parametrize("kustomization", sorted(DEPLOY.rglob("kustomization.yaml")), ids=lambda p: p.parent.name)
def test_kustomization_resources_exist(kustomization: Path) -> None:
    (doc,) = _docs(kustomization)
    for resource in doc["resources"]:
        assert (kustomization.parent / resource).exists(), resource


def _pod_specs() -> dict[str, dict[str, Any]]:
    return {
        obj["metadata"]["name"]: obj["spec"]["template"]["spec"]
        for obj in _k8s_objects()
        if obj["kind"] in ("Deployment", "StatefulSet")
    }


def test_k8s_deployments_have_probes_grace_and_run_as_non_root() -> None:
    pods = _pod_specs()
    assert set(pods) == {"taskyard-api", "taskyard-scheduler", "taskyard-jobs", "taskyard-worker"}
    for name, pod in pods.items():
        assert pod["terminationGracePeriodSeconds"] > 0, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
    api = pods["taskyard-api"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # uvicorn's drain must end before the kubelet's SIGKILL.
    graceful = int(api["args"][api["args"].index("--timeout-graceful-shutdown") + 1])
    assert graceful < pods["taskyard-api"]["terminationGracePeriodSeconds"]
    assert pods["taskyard-scheduler"]["containers"][0]["livenessProbe"]["exec"]["command"][-1] == "--check"
    worker = pods["taskyard-worker"]["containers"][0]
    # One agent per pod (a newer connection of an agent replaces the older): credentials by pod name.
    assert "${HOSTNAME}.token" in worker["args"][0]
    assert worker["args"][0].rstrip().endswith("exec taskyard worker")
    worker_env = {e["name"]: e for e in worker["env"]}
    assert (
        float(worker_env["TASKYARD_WORKER_DRAIN_TIMEOUT_S"]["value"])
        < pods["taskyard-worker"]["terminationGracePeriodSeconds"]
    )


def test_api_routes_used_by_probes_exist() -> None:
    from api.health import healthz, readyz

    assert "/healthz" in healthz.paths
    assert "/readyz" in readyz.paths


def test_keda_scales_the_worker_on_the_scheduler_queue_key() -> None:
    from scheduler.keys import Keys, route_id

    (scaled,) = [o for o in _k8s_objects() if o["kind"] == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "taskyard-worker"
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    triggers = {t["type"]: t["metadata"] for t in scaled["spec"]["triggers"]}
    assert triggers["redis"]["listName"] == Keys("taskyard").queue(route_id(None, ()))
    assert "taskyard_queue_depth" in triggers["prometheus"]["query"]


def test_metric_named_in_keda_is_exported() -> None:
    from api.metrics import Metrics

    names = {metric.name for metric in Metrics().registry.collect()}
    assert "taskyard_queue_depth" in names


def test_compose_services_and_healthchecks() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"postgres", "redis", "api", "scheduler", "jobs", "worker", "migrate"} <= set(services)
    for name in ("postgres", "redis", "api", "scheduler"):
        assert "healthcheck" in services[name], name
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    optional = {name for name, svc in services.items() if "profiles" in svc}
    assert all(services[name]["profiles"] == ["ops"] for name in optional)


def test_dockerfile_runs_taskyard_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user, "no USER line"
    assert not user[-1].startswith(("root", "0")), user[-1]
    assert re.search(r'^ENTRYPOINT \["taskyard"\]', text, re.MULTILINE)
    assert "-slim" in text
    assert "TASKYARD_MIGRATIONS_DIR" in text


def test_dockerfile_copies_every_package_and_installs_through_the_lock() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for package in ("taskyard", "api", "scheduler", "worker", "protocol"):
        assert re.search(rf"^COPY {package} \./{package}$", text, re.MULTILINE), package
    assert "pip install -c requirements.lock ." in text


def test_pre_commit_has_ruff_format_and_mypy() -> None:
    (config,) = _docs(ROOT / ".pre-commit-config.yaml")
    hook_ids = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "mypy"} <= hook_ids


def _all_env_names() -> set[str]:
    import api.settings as api_settings
    import scheduler.settings as scheduler_settings
    import worker.settings as worker_settings

    names = {"APP_ENV", "HTTP_ADDR", "TASKYARD_CONFIG", "TASKYARD_DATA_DIR", "TASKYARD_API_LOG_LEVEL"}
    for group, cls in api_settings.GROUPS.items():
        for field in dataclasses.fields(cls):
            if (group, field.name) not in {("http", "host"), ("http", "port")}:  # set through HTTP_ADDR
                names.add(api_settings.env_name(group, field.name))
    names |= {scheduler_settings.env_name(f.name) for f in dataclasses.fields(scheduler_settings.SchedulerSettings)}
    names |= {worker_settings.ENV_PREFIX + f.upper() for f in worker_settings.WorkerSettings.__struct_fields__}
    return names


def test_operations_doc_lists_every_setting() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    missing = sorted(name for name in _all_env_names() if f"`{name}`" not in text)
    assert not missing, f"docs/operations.md lacks: {missing}"


def test_operations_doc_lists_no_stale_setting() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    documented = set(
        re.findall(r"^\| `((?:TASKYARD_|APP_|HTTP_|JWT_|DATABASE_|REDIS_)[A-Z0-9_]*)` \|", text, re.MULTILINE)
    )
    extra = {"TASKYARD_MIGRATIONS_DIR", "TASKYARD_TEST_REQUIRE_SERVICES", "TASKYARD_TEST_POSTGRES_URL"}
    stale = sorted(documented - _all_env_names() - extra)
    assert not stale, f"docs/operations.md documents settings the code does not read: {stale}"


def test_readme_starts_with_the_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```", 2)[1]
    assert [line for line in first_block.splitlines() if line.strip()] == ["make dev", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^dev: \$\(STAMP\)", makefile, re.MULTILINE)
    assert re.search(r"^test: \$\(STAMP\)", makefile, re.MULTILINE)


async def test_readme_handler_example_runs() -> None:
    from worker.testing import run_handler

    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    run = await run_handler(namespace["summarize"], {"text": "hello"})
    assert run.output == {"summary": "hello"}


def test_operations_doc_config_tables_are_fresh() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("configdoc", DEPLOY / "configdoc.py")
    assert spec is not None
    assert spec.loader is not None
    configdoc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(configdoc)
    text = (ROOT / "docs" / "operations.md").read_text()
    assert configdoc.rewrite(text) == text, "settings changed: run `make docs` (deploy/configdoc.py)"
