"""`cmfhir worker --only GROUP[,GROUP]`: a process runs only some groups of the background
workers (with the outbox listener they share), so the gap engine and the subscription
workers can each have a process of their own."""

from __future__ import annotations

import argparse

import pytest

from cmfhir.app import open_context
from cmfhir.cli import main
from cmfhir.commands.workers import _groups
from cmfhir.config import Settings
from cmfhir.workers import standard_workers
from cmfhir.workers.standard import WORKER_GROUPS


async def test_a_process_runs_only_the_groups_it_is_given(settings: Settings) -> None:
    async with open_context(settings) as ctx:
        every = [w.name for w in standard_workers(ctx, settings)]
        gaps = [w.name for w in standard_workers(ctx, settings, groups=frozenset({"gaps"}))]
        subscriptions = [
            w.name for w in standard_workers(ctx, settings, groups=frozenset({"subscriptions"}))
        ]
        split = sorted(
            w.name
            for group in WORKER_GROUPS
            for w in standard_workers(ctx, settings, groups=frozenset({group}))
            if w.name != "outbox-listener"
        )
    assert "outbox-listener" in gaps and "outbox-listener" in subscriptions
    assert any(name.startswith("gaps:") for name in gaps)
    assert not any("subscriptions" in name for name in gaps)
    assert any(name.startswith("subscriptions:") for name in subscriptions)
    assert not any(name.startswith("gaps") or "gap" in name for name in subscriptions)
    # Together the groups are exactly the default set, each worker in one group only.
    assert split == sorted(name for name in every if name != "outbox-listener")


def test_the_option_names_every_group_and_refuses_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _groups("gaps, subscriptions") == frozenset({"gaps", "subscriptions"})
    with pytest.raises(argparse.ArgumentTypeError, match="nope"):
        _groups("gaps,nope")
    with pytest.raises(argparse.ArgumentTypeError):
        _groups(",")
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    help_text = capsys.readouterr().out
    for group in WORKER_GROUPS:
        assert group in help_text
    with pytest.raises(SystemExit):
        main(["worker", "--only", "nope"])
    assert "unknown worker group nope" in capsys.readouterr().err
