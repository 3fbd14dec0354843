"""Reconciling a member's computed gaps with the DetectedIssues stored for them: what to
write so that the store says what the rules say. Pure: the engine (gaps/engine.py) reads
the member's snapshot, runs the rules, and writes what this returns in one transaction.

- a computed gap with no DetectedIssue is created (a closed one is not: it never opened);
- one whose DetectedIssue says something else is updated (status, detail, evidence, the
  care manager stamped on it while open);
- a stored open or prospective gap its rule no longer computes is closed, with a mitigation
  saying when;
- a gap someone acknowledged (a mitigation not written by the engine) stays closed;
- stored gaps of rules not evaluated this time (a rule that failed) are left as they are.
Running it again on its own output changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from cmfhir.gaps import detected_issue as di
from cmfhir.gaps.model import Gap

__all__ = ["reconcile"]

_IGNORED = frozenset({"meta", "text"})


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in _IGNORED}


def reconcile(
    patient_id: str,
    computed: Sequence[Gap],
    stored: Sequence[dict[str, Any]],
    *,
    as_of: datetime,
    care_manager: str | None,
    evaluated_rules: Collection[str],
) -> list[dict[str, Any]]:
    """The DetectedIssues to write (each whole, with its id), in identifier order."""
    by_identifier: dict[str, dict[str, Any]] = {}
    for resource in stored:
        identifier = di.gap_identifier(resource)
        if identifier is not None:
            by_identifier[identifier] = resource
    gaps = {gap.identifier(patient_id): gap for gap in computed}
    writes: dict[str, dict[str, Any]] = {}
    for identifier, gap in gaps.items():
        old = by_identifier.get(identifier)
        if old is None:
            if gap.status != "closed-gap":
                writes[identifier] = di.build(
                    patient_id,
                    gap,
                    identified=gap.identified or as_of,
                    care_manager=care_manager,
                )
            continue
        was = di.gap_status(old)
        if di.acknowledged(old):
            if was != "closed-gap":
                new = _content(copy.deepcopy(old))
                di.set_status(new, "closed-gap")
                writes[identifier] = new
            continue
        if gap.status == "closed-gap":
            if was == "closed-gap":
                continue
            new = di.build(
                patient_id,
                gap,
                identified=gap.identified or as_of,
                care_manager=di.care_manager_of(old),
                closed_at=as_of,
                resource_id=old["id"],
            )
        else:
            new = di.build(
                patient_id,
                gap,
                identified=gap.identified or as_of,
                care_manager=care_manager,
                resource_id=old["id"],
            )
        if gap.identified is None and "identifiedDateTime" in old:
            new["identifiedDateTime"] = old["identifiedDateTime"]
        if new != _content(old):
            writes[identifier] = new
    for identifier, old in by_identifier.items():
        if identifier in gaps or di.rule_of(old) not in evaluated_rules:
            continue
        if di.gap_status(old) == "closed-gap":
            continue
        new = _content(copy.deepcopy(old))
        di.set_status(new, "closed-gap")
        mitigation = di.engine_mitigation(di.closed_text(as_of), as_of)
        new["mitigation"] = [*(old.get("mitigation") or ()), mitigation]
        writes[identifier] = new
    return [writes[k] for k in sorted(writes)]
