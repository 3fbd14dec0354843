"""The processes that make an import's lines ready ahead of its writes (`cmfhir import
--validators N`, `$import`'s `CMFHIR_IMPORT_VALIDATORS`): each one reads, validates,
stamps and indexes lines (`import_writer.check_line`) with the server's own search
parameters and compartment, handed to it once when it starts."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from cmfhir.exchange.import_writer import Definitions
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.compartment import PatientCompartment
from cmfhir.resources.search_parameters import SearchParameter, SearchParameterRegistry

__all__ = ["default_validators", "definitions", "installed", "validator_pool"]

_installed: Definitions | None = None


def default_validators(cpus: int | None = None) -> int:
    """As many as the CPUs, at most three: 2 on two cores. The writer that they feed mostly
    waits on PostgreSQL (it only stamps and COPYs), so with one fewer a core stays idle
    while the lines are made ready; the import is then bound by the CPU it needs in all."""
    return max(1, min(3, cpus or os.cpu_count() or 1))


def definitions(ctx: FhirContext) -> Definitions:
    """What making a line ready needs of `ctx`: its search parameters, its compartment and
    the types its write hooks change (those are made ready by the writer instead)."""
    return Definitions(ctx.registry, ctx.compartment, frozenset(ctx.write_hooks))


def _install(
    parameters: list[SearchParameter],
    code_systems: dict[str, str],
    compartment_params: dict[str, tuple[str, ...]],
    hooked: frozenset[str],
) -> None:
    global _installed
    registry = SearchParameterRegistry(parameters, code_systems)
    _installed = Definitions(registry, PatientCompartment(compartment_params, registry), hooked)


def installed() -> Definitions | None:
    """The definitions handed to this validating process (None elsewhere)."""
    return _installed


def validator_pool(ctx: FhirContext, processes: int) -> ProcessPoolExecutor | None:
    """`processes` validating processes holding `ctx`'s definitions (None for 0)."""
    if processes <= 0:
        return None
    found = definitions(ctx)
    args: tuple[Any, ...] = (
        list(found.registry),
        dict(found.registry.code_systems),
        dict(found.compartment.params),
        found.hooked,
    )
    return ProcessPoolExecutor(
        processes, mp_context=get_context("spawn"), initializer=_install, initargs=args
    )
