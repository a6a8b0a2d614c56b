"""The compose file can't run here (no Docker engine): check it parses and agrees with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from hilum.settings import Settings
from tests.conftest import API_COMMAND, WORKER_COMMAND

REPO = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def settings_env_names() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is not None and hasattr(alias, "choices"):
            names.update(str(c) for c in alias.choices)
        else:
            names.add(f"HILUM_{name.upper()}")
    return names


def test_compose_has_the_four_services_with_health_checks() -> None:
    services = compose()["services"]
    assert set(services) == {"api", "worker", "remote-worker", "redis", "postgres", "prometheus", "grafana"}
    assert services["remote-worker"]["profiles"] == ["worker-host"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    assert "depends_on" not in services["remote-worker"]  # it joins another host's Redis and database
    for name, service in services.items():
        assert "healthcheck" in service, name
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert {"hilum-data", "redis-data", "pg-data", "shared-data"} <= set(compose()["volumes"])


def test_api_health_check_is_readiness_and_no_service_waits_on_it() -> None:
    """/readyz needs a worker on each queue, so a worker waiting for a healthy API would never start."""
    services = compose()["services"]
    assert services["api"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8000/readyz"
    for name, service in services.items():
        api_dependency = (service.get("depends_on") or {}).get("api")
        assert api_dependency in (None, {"condition": "service_started"}), name


def test_prometheus_scrapes_the_api_and_the_worker_metrics_port() -> None:
    services = compose()["services"]
    port = services["worker"]["environment"]["HILUM_WORKER_METRICS_PORT"]
    config = yaml.safe_load((REPO / "deploy" / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["hilum-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["hilum-api"]["metrics_path"] == "/metrics"
    assert jobs["hilum-worker"]["dns_sd_configs"][0] == {
        "names": ["worker"],
        "type": "A",
        "port": int(port),
        "refresh_interval": "30s",
    }
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), volume


def exported_metric_names() -> set[str]:
    """Every series name the API and the workers can export (counters, histograms, gauges, collectors)."""
    from prometheus_client import REGISTRY

    import hilum.metrics  # noqa: F401  (registers the worker's metrics)
    from service.metrics import GPU_METRICS, StateCollector

    families = [*REGISTRY.collect(), *StateCollector(Settings(database_url="sqlite://"), lambda: (0, 0)).collect()]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = {f.name + suffix for f in families for suffix in suffixes.get(f.type, ("",))}
    return names | set(GPU_METRICS)


def test_dashboard_queries_only_metrics_the_code_exports() -> None:
    dashboard = json.loads((REPO / "deploy" / "monitoring" / "grafana" / "dashboards" / "hilum.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"\bhilum_[a-z0-9_]+", expr)}
    assert len(queried) >= 15
    assert queried <= exported_metric_names(), queried - exported_metric_names()
    # the list: request rate and latency, predictions by label, queue depth, jobs, training throughput
    for needed in (
        "hilum_http_requests_total",
        "hilum_http_request_duration_seconds_bucket",
        "hilum_predictions_total",
        "hilum_queue_depth",
        "hilum_jobs",
        "hilum_training_throughput_images_per_second",
    ):
        assert needed in queried, needed


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
