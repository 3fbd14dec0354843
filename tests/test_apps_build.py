"""The built apps committed under src/cmfhir/static/apps/ are those of their sources in
apps/: each build writes sources.json with a digest of the sources (apps/sources-manifest.mjs),
recomputed here. Rebuild with `npm ci && npm run build` in apps/<name>/ when this fails."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "apps"
BUILT = ROOT / "src" / "cmfhir" / "static" / "apps"
TOP = ("index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts")


def source_files(app: Path) -> list[str]:
    """As sources-manifest.mjs lists them: relative, "/"-joined, sorted."""
    files = [app / name for name in TOP if (app / name).is_file()]
    files += [p for p in (app / "src").rglob("*") if p.is_file()]
    return sorted(p.relative_to(app).as_posix() for p in files)


def sources_digest(app: Path) -> str:
    whole = hashlib.sha256()
    for path in source_files(app):
        digest = hashlib.sha256((app / path).read_bytes()).hexdigest()
        whole.update(f"{path}\0{digest}\n".encode())
    return whole.hexdigest()


APPS = sorted(p.name for p in SOURCES.iterdir() if (p / "package.json").is_file())


def test_every_app_is_built_and_every_build_has_sources() -> None:
    assert "member" in APPS
    built = sorted(p.name for p in BUILT.iterdir() if p.is_dir())
    assert built == APPS, "src/cmfhir/static/apps/ and apps/ differ: build or remove the app"


@pytest.mark.parametrize("app", APPS)
def test_committed_build_matches_its_sources(app: str) -> None:
    manifest = BUILT / app / "sources.json"
    assert manifest.is_file(), f"{manifest} is missing: run npm run build in apps/{app}"
    recorded = json.loads(manifest.read_text(encoding="utf-8"))
    assert recorded["app"] == app
    assert recorded["sources_sha256"] == sources_digest(SOURCES / app), (
        f"the build of apps/{app} is stale: run `npm ci && npm run build` in apps/{app} "
        "and commit src/cmfhir/static/apps/" + app
    )
    index = (BUILT / app / "index.html").read_text(encoding="utf-8")
    for asset in (BUILT / app / "assets").iterdir():
        if asset.suffix in (".js", ".css") and asset.name.startswith("index-"):
            assert f"/apps/{app}/assets/{asset.name}" in index, f"{asset.name} is left over"


def test_a_changed_source_changes_the_digest(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.tsx").write_text("one", encoding="utf-8")
    (tmp_path / "package.json").write_text("{}", encoding="utf-8")
    before = sources_digest(tmp_path)
    (tmp_path / "src" / "main.tsx").write_text("two", encoding="utf-8")
    assert sources_digest(tmp_path) != before
