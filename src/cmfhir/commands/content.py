"""`cmfhir content load`: write `profiles/content/` into the store now (the server also does
it at every start), and say what it created, updated or found unchanged."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmfhir.config import Settings

if TYPE_CHECKING:
    from cmfhir.interactions import FhirContext

__all__ = ["WithContext", "add_commands"]

# cli.py's runner: `work` run with the server's context (database migrated, definitions
# loaded). Passed in, as commands/ sits below app.py, which opens the context.
WithContext = Callable[[Callable[["FhirContext"], Awaitable[Any]]], Any]


def _load(args: argparse.Namespace, with_context: WithContext) -> int:
    # Imported here: `cmfhir --help` need not load the FHIR models.
    from cmfhir.errors import FhirError
    from cmfhir.interactions.content import CONTENT_DIR, ContentError, ContentReport, load_content

    folder: Path = args.folder or Settings().profiles_dir / CONTENT_DIR
    try:
        report: ContentReport = with_context(lambda ctx: load_content(ctx, folder))
    except (ContentError, FhirError) as error:
        print(f"cmfhir content load: {error}", file=sys.stderr)
        return 2
    for label in report.created:
        print(f"created {label}")
    for label in report.updated:
        print(f"updated {label}")
    print(
        f"{len(report.created)} created, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged"
    )
    return 0


def add_commands(commands: Any, with_context: WithContext) -> None:
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
    p_load.set_defaults(func=lambda args: _load(args, with_context))
