"""compose.yaml cannot run here (no Docker engine): check its shape against what the code needs."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "worker", "beat"]


def test_it_has_the_production_services():
    assert {"db", "redis", "web", "worker", "beat", "migrate"} <= set(SERVICES)
    assert SERVICES["db"]["image"].startswith("postgres:")
    assert SERVICES["redis"]["image"].startswith("redis:")


def test_every_service_has_an_image_or_build_and_a_known_key_set():
    allowed = {
        "image",
        "build",
        "command",
        "environment",
        "depends_on",
        "ports",
        "volumes",
        "healthcheck",
        "restart",
        "env_file",
    }
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        assert set(service) <= allowed, (name, set(service) - allowed)


def test_app_processes_run_the_right_commands():
    assert SERVICES["web"]["command"][:2] == ["gunicorn", "config.wsgi"]
    assert SERVICES["worker"]["command"][:4] == ["celery", "-A", "config", "worker"]
    assert SERVICES["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    assert SERVICES["migrate"]["command"][-2:] == ["migrate", "--noinput"]


def test_app_processes_reach_the_database_and_broker_services_by_name():
    for name in APP_SERVICES:
        env = SERVICES[name]["environment"]
        assert "@db:5432/" in env["DATABASE_URL"], name
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379"), name
        assert SERVICES[name]["depends_on"]["db"]["condition"] == "service_healthy"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ["web", "worker", "beat"]:
        migrate = SERVICES[name]["depends_on"]["migrate"]
        assert migrate["condition"] == "service_completed_successfully"


def test_every_environment_variable_it_sets_is_read_by_the_settings():
    settings_source = (ROOT / "config" / "settings.py").read_text()
    for name in APP_SERVICES:
        for var in SERVICES[name]["environment"]:
            assert re.search(rf'"{var}"', settings_source), f"{var} is not read by settings"


def test_secrets_come_from_the_environment_not_the_file():
    env = SERVICES["web"]["environment"]
    for var in ["SECRET_KEY", "LEDGER_OPERATOR_KEY"]:
        assert env[var].startswith("${") and ":?" in env[var], var
    lines = (ROOT / "compose.yaml").read_text().splitlines()
    assert not any("PRIVATE+KEY" in line for line in lines if not line.lstrip().startswith("#"))


def test_app_processes_share_the_keys_volume_and_the_optional_env_file():
    for name in APP_SERVICES:
        assert "appdata:/var/lib/claimproof" in SERVICES[name]["volumes"], name
        assert SERVICES[name]["env_file"] == [{"path": "claimproof.env", "required": False}]


def test_named_volumes_are_declared():
    declared = set(COMPOSE["volumes"])
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in declared


def test_the_image_contains_every_python_package_the_project_installs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "review*" in include and "payments*" in include
    for package in (p.rstrip("*") for p in include):
        assert f"COPY {package} {package}" in dockerfile, package
    assert "COPY templates templates" in dockerfile
