"""What the store hands to and takes from the interactions: plain records, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cmfhir.resources.index_values import ResourceIndex

__all__ = ["Current", "Method", "NewVersion", "StoredVersion"]

Method = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version as stored; `content` is the JSON text served to clients (None if deleted)."""

    resource_type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    content: str | None
    method: str = "update"


@dataclass(frozen=True, slots=True)
class Current:
    """The locked current row of a resource, read before changing it."""

    rid: int
    version: int
    deleted: bool


@dataclass(slots=True)
class NewVersion:
    """A version to write. `rid` is None for a resource the database has never seen."""

    resource_type: str
    id: str
    version: int
    last_updated: datetime
    method: Method
    content: str | None  # JSON text with id and meta filled in; None for a delete
    index: ResourceIndex | None
    patient_id: str | None
    rid: int | None = None
