"""`cmfhir content load`: write `profiles/content/` into the store now (the server also does
it at every start), and say what it created, updated or found unchanged."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def _load(args: argparse.Namespace) -> int:
    # Imported here: `cmfhir --help` need not load the FHIR models.
    from cmfhir.app import open_context
    from cmfhir.config import Settings
    from cmfhir.errors import FhirError
    from cmfhir.interactions.content import CONTENT_DIR, ContentError, load_content
    from cmfhir.store.database import embedded_url

    settings = Settings()
    url = settings.database_url or embedded_url(settings.data_dir)
    folder: Path = args.folder or settings.profiles_dir / CONTENT_DIR

    async def run() -> Any:
        async with open_context(settings.model_copy(update={"database_url": url})) as ctx:
            return await load_content(ctx, folder)

    try:
        report = asyncio.run(run())
    except (ContentError, FhirError) as error:
        print(f"cmfhir content load: {error}", file=sys.stderr)
        return 2
    for label in report.created:
        print(f"created {label}")
    for label in report.updated:
        print(f"updated {label}")
    for refusal in report.refused:
        print(f"cmfhir content load: not loaded: {refusal}", file=sys.stderr)
    print(
        f"{len(report.created)} created, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged"
        + (f", {len(report.refused)} refused" if report.refused else "")
    )
    return 2 if report.refused else 0


def add_commands(commands: Any) -> None:
    """`cmfhir content ...`, added to the subcommands of cli.py."""
    content = commands.add_parser(
        "content",
        help="the resources in profiles/content/",
        description="The Questionnaires, CodeSystems, ValueSets and other resources the "
        "server holds from the start (profiles/content/<Type>-<id>.json).",
    )
    actions = content.add_subparsers(dest="action", required=True)
    p_load = actions.add_parser(
        "load",
        help="write profiles/content/ into the store (created, updated or left alone by id)",
        description="Write every profiles/content/<Type>-<id>.json into the store: created "
        "when missing, a new version when its content changed, left alone otherwise. The "
        "server does the same at every start.",
    )
    p_load.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="another folder of <Type>-<id>.json files (default: profiles/content)",
    )
    p_load.set_defaults(func=_load)
