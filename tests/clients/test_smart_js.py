"""The SMART JavaScript client (`fhirclient` on npm, the library SMART apps are built on) run
unchanged under Node against the server: `getFhirRelease()` must answer 4, as it does for
FHIR 4.0.1 and does not for 4.3.0 (it answers 0, and apps then refuse the server).

Node and npm come from the system; where they are missing and the tests run as root with
apt-get (CI), the fixture installs Debian's `nodejs` and `npm`. The npm packages are installed
from `smart_js/package-lock.json` into `.data/node/smart-js/` once and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).resolve().parent / "smart_js"
CACHE = ROOT / ".data" / "node" / "smart-js"
FILES = ("package.json", "package-lock.json", "fhir_release.cjs")


def _node_and_npm() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if (node is None or npm is None) and os.geteuid() == 0 and shutil.which("apt-get"):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "nodejs", "npm"]
        if subprocess.run(install, env=env, check=False, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=False, **quiet)
            subprocess.run(install, env=env, check=False, **quiet)
        node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed and cannot be installed here")
    return node, npm


@pytest.fixture(scope="session")
def smart_js() -> tuple[str, Path]:
    """(node executable, folder holding the script and its installed node_modules)."""
    node, npm = _node_and_npm()
    CACHE.mkdir(parents=True, exist_ok=True)
    stale = any(
        not (CACHE / name).exists() or (CACHE / name).read_bytes() != (SOURCE / name).read_bytes()
        for name in FILES
    )
    if stale or not (CACHE / "node_modules" / "fhirclient").is_dir():
        for name in FILES:
            shutil.copyfile(SOURCE / name, CACHE / name)
        # --omit=optional: the browser-only crypto polyfill drags in React Native (350 MB).
        subprocess.run(
            [npm, "ci", "--omit=optional", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CACHE,
            check=True,
            timeout=600,
        )
    return node, CACHE


def run_script(smart_js: tuple[str, Path], script: str, *args: str) -> Any:
    node, folder = smart_js
    done = subprocess.run(
        [node, script, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_get_fhir_release_is_4_against_the_default_endpoint(
    smart_js: tuple[str, Path], base: str
) -> None:
    answer = run_script(smart_js, "fhir_release.cjs", base)
    assert answer == {"version": "4.0.1", "release": 4}
