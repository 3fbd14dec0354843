"""The SMART on FHIR JavaScript client (`fhirclient` from npm, run by node) against the
server: `getFhirRelease()` must answer 4 (R4) at the default endpoint. It answered 0 while
the server declared 4.3.0, a version the client does not know."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the JavaScript client tests")
    if not (NODE_DIR / "node_modules" / "fhirclient").is_dir():
        # package-lock.json pins the versions; .npmrc leaves out the optional React Native
        # dependencies and runs no install scripts.
        subprocess.run([npm, "ci"], cwd=NODE_DIR, check=True, capture_output=True, timeout=600)
    return node


def test_get_fhir_release_is_4(node: str, base: str) -> None:
    done = subprocess.run(
        [node, "fhir_release.js", base],
        cwd=NODE_DIR,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(done.stdout) == {"release": 4, "version": "4.0.1"}
