"""deploy/ stays in step with the package: compose, configs, Dockerfile, systemd unit, README."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bot.config import OPENAI_KEY_ENV, TOKEN_ENV, load_settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SECRET_ENV = {*TOKEN_ENV.values(), OPENAI_KEY_ENV}  # what the config reads from the environment
BOT_SERVICES = {"bot": "local", "bot-vllm": "openai", "bot-api": "openai"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def mounted_config(service: dict[str, Any]) -> Path:
    """The config file a bot service mounts at /data/config.toml."""
    (source,) = [
        volume.split(":")[0]
        for volume in service["volumes"]
        if volume.split(":")[1] == "/data/config.toml"
    ]
    return (DEPLOY / source).resolve()


def health_port(service: dict[str, Any]) -> int:
    (port,) = re.findall(r"127\.0\.0\.1:(\d+)/healthz", " ".join(service["healthcheck"]["test"]))
    return int(port)


def has_gpu(service: dict[str, Any]) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return any("gpu" in d.get("capabilities", []) for d in devices.get("devices", []))


# -- docker-compose.yml


def test_compose_has_the_bot_three_ways_and_an_optional_vllm(compose):
    services = compose["services"]
    assert set(services) == {*BOT_SERVICES, "vllm"}
    # Every service sits in a profile: `docker compose --profile X up` picks one way to run.
    assert {name: services[name]["profiles"] for name in services} == {
        "bot": ["gpu"],
        "bot-vllm": ["vllm"],
        "bot-api": ["api"],
        "vllm": ["vllm"],
    }
    assert has_gpu(services["bot"]) and has_gpu(services["vllm"])
    assert not has_gpu(services["bot-vllm"]) and not has_gpu(services["bot-api"])


@pytest.mark.parametrize(("name", "backend"), BOT_SERVICES.items())
def test_each_bot_service_mounts_a_valid_config_for_its_backend(compose, name, backend):
    service = compose["services"][name]
    settings = load_settings(mounted_config(service), env={"TELEGRAM_BOT_TOKEN": "1:x"})
    assert settings.engine.backend == backend
    assert settings.storage.path.startswith("/data/")  # on the volume
    assert "bot-data:/data" in service["volumes"]
    assert "hf-cache:/cache/huggingface" in service["volumes"]
    # The health check asks the metrics server these configs turn on.
    assert settings.metrics.port == health_port(service)
    assert settings.metrics.listen == "0.0.0.0"


def test_the_bot_services_pass_only_the_secrets_the_config_reads(compose):
    for name in BOT_SERVICES:
        environment = compose["services"][name]["environment"]
        assert set(environment) == SECRET_ENV, name
        assert all("=" not in entry for entry in environment)  # passed through, never written


def test_the_vllm_service_serves_r1_with_its_reasoning_parser_where_the_bot_looks(compose):
    vllm = compose["services"]["vllm"]
    command = [str(part) for part in vllm["command"]]
    assert vllm["entrypoint"] == ["vllm", "serve"]
    assert command[0] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"
    assert command[command.index("--reasoning-parser") + 1] == "deepseek_r1"
    port = int(command[command.index("--port") + 1])
    max_model_len = int(command[command.index("--max-model-len") + 1])
    bot = compose["services"]["bot-vllm"]
    assert bot["depends_on"]["vllm"]["condition"] == "service_healthy"
    settings = load_settings(mounted_config(bot), env={})
    url = urlsplit(settings.openai.base_url)
    assert (url.hostname, url.port, url.path) == ("vllm", port, "/v1")
    assert settings.model.max_context_tokens == max_model_len


# -- Dockerfile


def test_the_dockerfile_installs_the_project_the_readme_way(dockerfile):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (command,) = [line for line in quick_start.splitlines() if "python -m bot run" in line]
    # The README: python3 -m venv .venv && . .venv/bin/activate && pip install -e . && ...
    readme_steps = [step.strip() for step in command.split("&&")]
    assert "python3 -m venv .venv" in readme_steps and "pip install -e ." in readme_steps
    runs = " && ".join(arguments for keyword, arguments in dockerfile if keyword == "RUN")
    assert "python3 -m venv .venv" in runs
    assert ".venv/bin/pip install -e ." in runs
    (cmd,) = [arguments for keyword, arguments in dockerfile if keyword == "CMD"]
    assert cmd == '["python", "-m", "bot", "run"]'
    assert any(k == "ENV" and "/opt/r1-chat-bot/.venv/bin:$PATH" in a for k, a in dockerfile)


def test_the_dockerfile_runs_as_a_user_with_its_state_on_volumes(dockerfile):
    (base,) = [arguments for keyword, arguments in dockerfile if keyword == "FROM"]
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    users = [arguments for keyword, arguments in dockerfile if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    (volumes,) = [arguments for keyword, arguments in dockerfile if keyword == "VOLUME"]
    assert set(yaml.safe_load(volumes)) == {"/data", "/cache/huggingface"}
    workdirs = [arguments for keyword, arguments in dockerfile if keyword == "WORKDIR"]
    assert workdirs[-1] == "/data"  # the default storage.path (bot.db) lands on the volume
    assert any(k == "ENV" and "HF_HOME=/cache/huggingface" in a for k, a in dockerfile)


def test_what_the_dockerfile_copies_exists_and_is_not_ignored(dockerfile):
    ignored = [
        line.strip().strip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".venv" in ignored and ".git" in ignored
    for keyword, arguments in dockerfile:
        if keyword == "COPY":
            *sources, _target = shlex.split(arguments)
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.strip("/") not in ignored, source


# -- systemd


def test_the_systemd_unit_restarts_on_failure_as_a_plain_user():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "r1-chat-bot.service", encoding="utf-8")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"  # `run` exits 1 when the engine breaks
    assert service["RestartPreventExitStatus"] == "2"  # a config error: restarting cannot help
    assert service["User"] not in ("root", "0")
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["WorkingDirectory"] == "/var/lib/" + service["StateDirectory"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/.venv/bin/python")  # the README's install
    assert argv[1:4] == ["-m", "bot", "run"]
    assert argv[4] == "--config"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


# -- the README's Deploy section


def deploy_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]


def test_every_config_in_the_readme_deploy_section_loads(tmp_path):
    blocks = re.findall(r"```toml\n(.*?)```", deploy_section(), flags=re.DOTALL)
    assert len(blocks) == 3  # local GPU, vLLM/SGLang server, hosted API
    backends = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"config{i}.toml"
        path.write_text(block, encoding="utf-8")
        backends.append(load_settings(path, env={}).engine.backend)
    assert backends == ["local", "openai", "openai"]


def test_the_readme_names_the_compose_profiles_and_files_that_exist(compose):
    section = deploy_section()
    profiles = set(re.findall(r"docker compose --profile (\w+) up", section))
    assert profiles == {p for s in compose["services"].values() for p in s["profiles"]}
    for path in re.findall(r"\]\((deploy/[^)]+)\)", section):
        assert (REPO / path).exists(), path


# -- the image itself, where Docker can build it


def docker_daemon() -> str | None:
    """Why the image cannot be built here, or None when a Docker daemon answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command on this machine"
    try:
        done = subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    return None if done.returncode == 0 else "no Docker daemon reachable (docker info failed)"


@pytest.mark.slow
def test_the_image_builds_and_knows_the_bot():
    reason = docker_daemon()
    if reason is not None:
        pytest.skip(reason)
    tag = "r1-chat-bot:test"
    build = ["docker", "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(REPO)]
    subprocess.run(build, check=True, timeout=3600)
    check = subprocess.run(
        ["docker", "run", "--rm", tag, "python", "-m", "bot", "check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "config: (defaults)" in check.stdout
