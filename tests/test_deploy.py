"""The compose file can't run here (no Docker engine): check it parses and agrees with the code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hilum.settings import Settings
from tests.conftest import API_COMMAND, WORKER_COMMAND

REPO = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is not None and hasattr(alias, "choices"):
            names.update(str(c) for c in alias.choices)
        else:
            names.add(f"HILUM_{name.upper()}")
    return names


def test_compose_has_the_four_services_with_health_checks() -> None:
    services = compose()["services"]
    assert set(services) == {"api", "worker", "remote-worker", "redis", "postgres"}
    assert services["remote-worker"]["profiles"] == ["worker-host"]
    assert "depends_on" not in services["remote-worker"]  # it joins another host's Redis and database
    for name, service in services.items():
        assert "healthcheck" in service, name
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert {"hilum-data", "redis-data", "pg-data", "shared-data"} <= set(compose()["volumes"])


def test_compose_environment_names_only_settings_the_code_reads() -> None:
    known = settings_env_names()
    for name in ("api", "worker", "remote-worker"):
        env = compose()["services"][name]["environment"]
        hilum_vars = {k for k in env if k.startswith("HILUM_") or k == "REDIS_URL"}
        assert hilum_vars <= known, hilum_vars - known
        assert {"HILUM_DATABASE_URL", "REDIS_URL", "HILUM_DATA_DIR", "HILUM_PATIENT_SALT"} <= set(env)


def test_compose_commands_are_the_ones_the_tests_start() -> None:
    services = compose()["services"]
    api = services["api"]["command"]
    assert api[:3] == ["uvicorn", "service.app:create_app", "--factory"]
    worker = services["worker"]["command"]
    assert worker[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert services["remote-worker"]["command"] == worker
    assert set(worker[worker.index("-Q") + 1].split(",")) == {"gpu", "ingest"}
    assert api[: len(API_COMMAND)] == API_COMMAND
    assert worker[: len(WORKER_COMMAND)] == WORKER_COMMAND


def test_dockerfiles_exist_and_copy_every_package() -> None:
    for service in ("api", "worker", "remote-worker"):
        dockerfile = REPO / compose()["services"][service]["build"]["dockerfile"]
        text = dockerfile.read_text()
        for package in ("hilum", "service", "worker", "pipelines", "models"):
            assert re.search(rf"^COPY {package} {package}$", text, re.M), (dockerfile, package)


def test_env_example_covers_required_secrets() -> None:
    example = (REPO / "deploy" / ".env.example").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", (REPO / "docker-compose.yml").read_text()))
    assert required <= set(re.findall(r"^#?\s*(\w+)=", example, re.M))
