"""The garbage collector's settings for a long-running cmfhir process, once it has started."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from cmfhir.resources.types import RESOURCE_TYPES

if TYPE_CHECKING:
    from cmfhir.interactions import FhirContext

__all__ = ["GC_THRESHOLDS", "settle_heap"]

# A full collection after 100 middle-generation ones instead of 10. With the start-up heap
# frozen, the oldest generation holds little, so the collector's "25% new since the last full
# collection" condition is nearly always met: a bulk load set off one full collection every
# few Bundles (418 in one 10,000-member run, median 34 ms, bench/README.md), each re-scanning
# what requests had promoted. Young collections stay at 700: a larger first generation made
# each of them traverse the live Bundle again and cost more than it saved.
GC_THRESHOLDS = (700, 10, 100)


def settle_heap(context: FhirContext) -> None:
    """Build the lazily compiled index extractors now, then move everything made at start-up
    out of the garbage collector's sight: a full collection otherwise re-scans those
    hundreds of thousands of long-lived objects and stalls a worker for ~100 ms every few
    seconds under load, which was the p99 of reads and searches (bench/README.md). Every
    long-running process calls it once started: `cmfhir serve`, `cmfhir worker`, `cmfhir gaps
    sweep`."""
    for resource_type in RESOURCE_TYPES:
        context.registry.extractors(resource_type)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
