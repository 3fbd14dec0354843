"""The exchange features' command line: `cmfhir serve --mllp-port`, and `cmfhir import`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["add_commands"]


class _Environment(argparse.Action):
    """An option of `serve` that is a setting: put in the environment, where every server
    process (uvicorn workers included) reads it once at start."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        os.environ[f"CMFHIR_{self.dest.upper()}"] = str(values)
        setattr(namespace, self.dest, values)


def add_commands(commands: Any) -> None:
    """Add the exchange options and subcommands to `cmfhir`'s subparsers."""
    serve: argparse.ArgumentParser | None = commands.choices.get("serve")
    if serve is not None:
        serve.add_argument(
            "--mllp-port",
            type=int,
            action=_Environment,
            metavar="PORT",
            help="also receive HL7 v2 over MLLP on this port (default: off); peers from "
            "CMFHIR_MLLP_ALLOW (default loopback), TLS with CMFHIR_MLLP_TLS_CERT/KEY",
        )
