"""docker-compose.yml, validated by parsing (no Docker engine runs here)."""

from __future__ import annotations

import re
import runpy

import pytest
import yaml

from cbirq.embed.families import distributions
from tests.conftest import REPO

PYPROJECT = REPO / "pyproject.toml"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_and_gpu_profile(compose):
    services = compose["services"]
    assert set(services) == {"redis", "worker", "query", "trainer", "gpu-worker", "web"}
    assert "profiles" not in services["worker"] and services["gpu-worker"]["profiles"] == ["gpu"]
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert (
        "query" in services["query"]["command"][services["query"]["command"].index("--queues") + 1]
    )


def option(service: dict, name: str) -> str:
    command = service["command"]
    return command[command.index(name) + 1]


def test_gpu_workers_are_pinned_and_cpu_workers_hide_gpus(compose):
    services = compose["services"]
    assert option(services["gpu-worker"], "--gpus") == "all"
    assert "--concurrency" not in services["gpu-worker"]["command"], "one process per GPU"
    for name in ("worker", "query", "trainer"):
        assert option(services[name], "--gpus") == "none"
        assert option(services[name], "--concurrency") == "1"


def test_redis_needs_a_password_and_stays_on_the_host(compose):
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert re.search(r"--requirepass \$\{CBIRQ_REDIS_PASSWORD:\?", command)
    assert "--appendonly yes" in command
    assert all(port.startswith("127.0.0.1:") for port in redis["ports"])
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_workers_reach_redis_with_the_same_password(compose):
    for name in ("worker", "query", "trainer", "gpu-worker", "web"):
        service = compose["services"][name]
        env = service["environment"]
        assert env["CBIRQ_BROKER_URL"].startswith("redis://redis:6379")
        assert env["CBIRQ_REDIS_PASSWORD"].startswith("${CBIRQ_REDIS_PASSWORD:?")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert any(v.endswith(":/models") for v in service["volumes"])


def test_the_web_page_is_published_on_the_host_only(compose):
    web = compose["services"]["web"]
    assert web["command"][0] == "serve"
    assert web["ports"] == ["127.0.0.1:8000:8000"]
    assert web["environment"]["CBIRQ_SERVE_TOKEN"] == "${CBIRQ_SERVE_TOKEN:-}"


def test_redis_never_evicts_and_containers_have_limits(compose):
    services = compose["services"]
    command = " ".join(services["redis"]["command"])
    assert (
        "--maxmemory-policy noeviction" in command
        and "--maxmemory ${CBIRQ_REDIS_MAXMEMORY" in command
    )
    for name in ("worker", "query", "trainer"):
        assert services[name]["cpus"].startswith("${CBIRQ_") and services[name]["mem_limit"]
    assert services["web"]["mem_limit"]


def test_images_can_be_named_for_machines_without_docker_hub(compose):
    services = compose["services"]
    assert services["redis"]["image"] == "${CBIRQ_REDIS_IMAGE:-redis:7.2-alpine}"
    for name in ("worker", "trainer"):
        build = services[name]["build"]
        assert build["args"]["BASE_IMAGE"] == "${CBIRQ_BASE_IMAGE:-python:3.11-slim-bookworm}"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm\nFROM ${BASE_IMAGE} AS base" in dockerfile
    assert "--no-index --find-links $WHEELS" in dockerfile


def test_each_role_has_its_image(compose):
    """Issue 32: torch and its CUDA libraries only where training or a GPU needs them."""
    services = compose["services"]
    for name in ("worker", "query", "web"):
        assert services[name]["build"]["target"] == "cpu"
        assert services[name]["image"] == "${CBIRQ_CPU_IMAGE:-cbirq:cpu}"
    for name in ("trainer", "gpu-worker"):
        assert services[name]["build"]["target"] == "torch"
        assert services[name]["image"] == "${CBIRQ_TORCH_IMAGE:-cbirq:torch}"
    assert option(services["trainer"], "--queues") == "train"
    assert "train" not in option(services["worker"], "--queues").split(",")
    assert "extract" in option(services["worker"], "--queues").split(",")


def final_stages(dockerfile: str) -> dict[str, str]:
    """Each stage's text by name."""
    parts = re.split(r"^FROM \S+ AS (\S+)\n", dockerfile, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_final_images_run_as_a_user_and_hold_no_wheel():
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = final_stages(dockerfile)
    for name in ("cpu", "torch"):
        stage = stages[name]
        assert "USER cbirq" in stage and "pip install" not in stage
        assert all(
            line.startswith(("COPY --from=", "USER", "ENTRYPOINT", "CMD", "#", ""))
            for line in stage.splitlines()
        ), "a final image only copies what was built"
    # The wheels are fetched from WHEELS in the build, never sent with the context.
    assert "COPY wheelhouse" not in dockerfile
    assert "wheelhouse" in (REPO / ".dockerignore").read_text().splitlines()


def test_the_torch_image_builds_on_its_dependencies_in_parts():
    """A copy of torch's 6 GB virtualenv, and one 6 GB step, ran a CI machine's disk out."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM torch-deps AS torch\n" in dockerfile
    steps = re.findall(
        r"^RUN python3 /src/docker/wheels.py (\d+) (\d+)$",
        final_stages(dockerfile)["torch-deps"],
        re.M,
    )
    count = len(steps)
    assert count > 1 and steps == [(str(k), str(count)) for k in range(1, count + 1)]


def test_the_cpu_image_leaves_out_what_makes_graphs_and_keeps_what_runs_them():
    requirements = runpy.run_path(str(REPO / "docker" / "requirements.py"))
    makers = set(distributions()) - {"onnxruntime"}
    assert requirements["MAKE_GRAPHS"] == makers, "docker/requirements.py: update MAKE_GRAPHS"
    cpu = {requirements["name"](r) for r in requirements["requirements"]("cpu", PYPROJECT)}
    everything = {requirements["name"](r) for r in requirements["requirements"]("torch", PYPROJECT)}
    assert cpu == everything - makers and {"onnxruntime", "starlette", "celery"} <= cpu


def test_workers_and_the_web_page_have_health_checks(compose):
    services = compose["services"]
    for name in ("worker", "query", "trainer", "gpu-worker"):
        assert "cbirq workers" in services[name]["healthcheck"]["test"][1]
    assert "8000" in " ".join(services["web"]["healthcheck"]["test"])
