"""The container files say what docs/deployment.md promises (Docker itself is not on the test
machines: `./dev test` also lints the Dockerfile with hadolint)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _final_stage() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    starts = [n for n, line in enumerate(instructions) if line.startswith("FROM ")]
    assert len(starts) >= 2, "a multi-stage build"
    return instructions[starts[-1] :]


def test_runtime_image() -> None:
    stage = _final_stage()
    text = "\n".join(stage)
    healthcheck = next(line for line in stage if line.startswith("HEALTHCHECK"))
    assert "/readyz" in healthcheck
    assert re.search(r'^VOLUME \["/data"\]$', text, re.M)
    assert "CMFHIR_DATA_DIR=/data" in text
    user = next(line for line in stage if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("root", "0")
    assert stage[-1].startswith("CMD ") and '"cmfhir", "serve"' in stage[-1]


def test_no_test_tools_in_the_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "[test]" not in dockerfile
    assert "pip install" not in "\n".join(_final_stage()), "the runtime stage installs nothing"
    assert "--constraint requirements.lock -r runtime.txt" in dockerfile
    assert "['project']['dependencies']" in dockerfile


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_cmfhir_on_postgresql_16() -> None:
    services = _compose()["services"]
    assert services["db"]["image"] == "postgres:16"
    cmfhir = services["cmfhir"]
    url = cmfhir["environment"]["CMFHIR_DATABASE_URL"]
    assert url.startswith("postgresql://") and "@db:5432/" in url
    assert cmfhir["depends_on"]["db"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(cmfhir["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["db"]["volumes"] and "pgdata" in _compose()["volumes"]
