"""Background workers (docs/architecture.md, "Workers"): the runtime, the outbox consumer
loop, scheduled jobs, and the set of workers a process runs."""

from cmfhir.workers.heap import GC_THRESHOLDS, settle_heap
from cmfhir.workers.outbox import EventHandler, OutboxConsumer
from cmfhir.workers.runtime import Running, Worker, pause, run_workers, start_workers
from cmfhir.workers.scheduled import Pruner, Scheduled, system_clock
from cmfhir.workers.standard import standard_workers
from cmfhir.workers.subscriptions import notification_pruner

__all__ = [
    "GC_THRESHOLDS",
    "EventHandler",
    "OutboxConsumer",
    "Pruner",
    "Running",
    "Scheduled",
    "Worker",
    "notification_pruner",
    "pause",
    "run_workers",
    "settle_heap",
    "standard_workers",
    "start_workers",
    "system_clock",
]
