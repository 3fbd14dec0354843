"""The workers every cmfhir process runs (in `cmfhir serve`, or apart in `cmfhir worker`):
the outbox listener, the gap engine (its outbox feed, evaluators and daily sweep) and the
outbox pruner. Subscriptions and exports add theirs here.

A process may run only some groups of them (`cmfhir worker --only gaps`), so that the gap
engine and the subscription workers each get a process, and a core, of their own on a larger
machine (docs/deployment.md). Every group's work is claimed in the database (leases, outbox
positions), so two processes running the same group share it without doing it twice."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.exchange.export.worker import ExportWorker
from cmfhir.exchange.import_worker import import_worker
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.gaps.engine import GapEngine, GapEvaluator, GapFeed, sweep_job
from cmfhir.gaps.ruleset import RuleSet, load_ruleset
from cmfhir.interactions.context import FhirContext
from cmfhir.store import consumers, gap_queue
from cmfhir.workers.outbox import OutboxConsumer
from cmfhir.workers.runtime import Worker
from cmfhir.workers.scheduled import Clock, Pruner, Scheduled, system_clock
from cmfhir.workers.subscriptions import subscription_workers

__all__ = ["WORKER_GROUPS", "standard_workers"]

# The groups a process may run: the gap engine (its feed, evaluators and daily sweep), the
# subscription matcher, sender and pruner, bulk export and import, and the outbox pruner.
WORKER_GROUPS = ("gaps", "subscriptions", "exchange", "housekeeping")


def standard_workers(
    ctx: FhirContext,
    settings: Settings,
    *,
    ruleset: RuleSet | None = None,
    clock: Clock = system_clock,
    groups: frozenset[str] = frozenset(WORKER_GROUPS),
) -> list[Worker]:
    """The workers of `groups` (all by default), with the outbox listener they share."""
    # The workers are the server itself: they see and write everything.
    ctx = replace(ctx, principal=TRUSTED)
    store = ctx.store
    listener = consumers.Listener(store.engine)
    if ruleset is None:
        ruleset = load_ruleset(settings.profiles_dir, settings.gap_rules)
    engine = GapEngine(ctx, ruleset, clock=clock)
    workers: list[Worker] = [listener]
    if "gaps" in groups:
        workers += [
            OutboxConsumer(store, GapFeed(ruleset), listener.subscribe(consumers.EVENT_CHANNEL)),
            *(
                GapEvaluator(engine, listener.subscribe(gap_queue.GAP_CHANNEL), index=n)
                for n in range(max(settings.gap_evaluators, 1))
            ),
            Scheduled(
                store,
                "gaps-sweep",
                timedelta(hours=settings.gap_sweep_interval_h),
                sweep_job,
                clock=clock,
            ),
        ]
    if "housekeeping" in groups:
        workers.append(Pruner(store, timedelta(days=settings.event_retention_days), clock=clock))
    if "subscriptions" in groups:
        workers += subscription_workers(
            ctx,
            listener,
            clock=clock,
            retention=timedelta(days=settings.subscription_retention_days),
        )
    exchange = ExchangeSettings()
    if "exchange" in groups and exchange.export_worker:
        workers.append(ExportWorker(ctx, exchange.export_dir, expiry_s=exchange.export_expiry_s))
    if "exchange" in groups and exchange.import_worker:
        workers.append(import_worker(ctx, exchange))
    return workers
