"""The content loader: profiles/content/ written into the store at every start, idempotently
by id (created when missing, a new version when the file changed, nothing otherwise), and by
`cmfhir content load`; a file that does not validate is refused, naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmfhir.config import Settings, default_profiles_dir
from cmfhir.interactions.content import ContentError, read_content
from serving import run_cmfhir

ASSESSMENT = "Questionnaire/comprehensive-assessment"


def versions(http: httpx.Client, location: str) -> int:
    # Asked in R4B: the content holds R4B-only types (SubscriptionTopic) too.
    r4b = {"Accept": "application/fhir+json; fhirVersion=4.3"}
    history = http.get(f"{location}/_history", headers=r4b).json()
    assert "total" in history, (location, history)
    return int(history["total"])


def content_versions(http: httpx.Client, profiles: Path) -> dict[str, int]:
    """The number of versions of every content resource."""
    out: dict[str, int] = {}
    for path in sorted((profiles / "content").glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        location = f"{resource['resourceType']}/{resource['id']}"
        out[location] = versions(http, location)
    return out


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    """A copy of profiles/ whose content files all validate."""
    copy = tmp_path / "profiles"
    shutil.copytree(default_profiles_dir(), copy)
    for path in (copy / "content").glob("*.json"):
        try:
            read_content_file(path)
        except ContentError:
            path.unlink()
    return copy


def read_content_file(path: Path) -> None:
    single = path.parent.parent / "single"
    single.mkdir(exist_ok=True)
    try:
        shutil.copy(path, single / path.name)
        read_content(single)
    finally:
        shutil.rmtree(single)


def edit(profiles: Path, name: str, change: dict[str, Any]) -> None:
    path = profiles / "content" / name
    resource = json.loads(path.read_text(encoding="utf-8"))
    resource.update(change)
    path.write_text(json.dumps(resource), encoding="utf-8")


def test_loader_idempotent_across_restarts(
    scratch_database: str, start_server: type, profiles: Path
) -> None:
    settings = Settings(database_url=scratch_database, profiles_dir=profiles)
    broken = {"resourceType": "ValueSet", "id": "broken", "status": "invented"}
    (profiles / "content" / "ValueSet-broken.json").write_text(json.dumps(broken))
    with start_server(settings) as server, httpx.Client(base_url=server.base) as http:
        # a file that does not validate is left out; the server starts with the others
        assert http.get("ValueSet/broken").status_code == 404
        (profiles / "content" / "ValueSet-broken.json").unlink()
        first = content_versions(http, profiles)
        assert set(first.values()) == {1}
        assert http.delete("ValueSet/yes-no").status_code in (200, 204)
    with start_server(settings) as server, httpx.Client(base_url=server.base) as http:
        again = content_versions(http, profiles)
        # unchanged files wrote nothing; the deleted one is back
        assert again == first | {"ValueSet/yes-no": 3}
        assert http.get("ValueSet/yes-no").status_code == 200
    edit(profiles, "Questionnaire-comprehensive-assessment.json", {"version": "0.2.0"})
    with start_server(settings) as server, httpx.Client(base_url=server.base) as http:
        changed = content_versions(http, profiles)
        assert changed == again | {ASSESSMENT: 2}
        found = http.get(
            "Questionnaire",
            params={"url": "https://cmfhir.org/fhir/Questionnaire/comprehensive-assessment"},
        ).json()
        assert found["entry"][0]["resource"]["version"] == "0.2.0"


def test_content_load_command(scratch_database: str, tmp_path: Path, profiles: Path) -> None:
    env = {"CMFHIR_PROFILES_DIR": str(profiles)}
    done = run_cmfhir(scratch_database, tmp_path, "content", "load", **env)
    assert done.returncode == 0, done.stderr
    assert f"created {ASSESSMENT}" in done.stdout
    edit(profiles, "CodeSystem-program.json", {"version": "0.2.0"})
    done = run_cmfhir(scratch_database, tmp_path, "content", "load", **env)
    assert done.returncode == 0, done.stderr
    total = len(list((profiles / "content").glob("*.json")))
    assert done.stdout.splitlines() == [
        "updated CodeSystem/program",
        f"0 created, 1 updated, {total - 1} unchanged",
    ]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        pytest.param(
            "Questionnaire-a.json",
            {"resourceType": "Questionnaire", "id": "b", "status": "active"},
            "must be named Questionnaire-b.json",
            id="misnamed",
        ),
        pytest.param(
            "CodeSystem-c.json",
            {"resourceType": "CodeSystem", "id": "c", "status": "invented", "content": "complete"},
            "CodeSystem-c.json",
            id="invalid",
        ),
    ],
)
def test_bad_content_file_named(
    tmp_path: Path, name: str, content: dict[str, Any], words: str
) -> None:
    (tmp_path / name).write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(ContentError, match=words):
        read_content(tmp_path)


def test_bad_content_file_refused_by_command(
    scratch_database: str, tmp_path: Path, profiles: Path
) -> None:
    edit(profiles, "ValueSet-yes-no.json", {"status": "invented"})
    done = run_cmfhir(
        scratch_database, tmp_path, "content", "load", CMFHIR_PROFILES_DIR=str(profiles)
    )
    assert done.returncode == 2
    assert "ValueSet-yes-no.json" in done.stderr
