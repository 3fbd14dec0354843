"""Subsets of a resource for `_summary` and `_elements`
(https://hl7.org/fhir/R4B/search.html#summary, #elements). Pure: a parsed resource in, a
trimmed copy out, tagged SUBSETTED so that nobody writes it back over the whole resource.

Which elements are summary and which mandatory is read from the `fhir.resources.R4B` field
annotations (`summary_element_property`, `element_required`), once per model class.

- `_summary=true`: the elements marked isSummary, and inside a kept backbone element
  (`Observation.component`) its summary elements; datatype values are kept whole.
- `_summary=text`: `text`, `id`, `meta` and the top-level mandatory elements.
- `_summary=data`: everything but `text`.
- `_elements=a,b`: those top-level elements, `id`, `meta` and the mandatory ones. A name is
  `element` or `Type.element`; `value` or `value[x]` names every `value[x]` variant.

Every subset keeps `resourceType`, `implicitRules` and `modifierExtension`: they change the
meaning of the rest (R5 marks `modifierExtension` as summary; R4B forgot to).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel

from cmfhir.errors import BadRequest
from cmfhir.resources._elements import _field_type, is_root_type
from cmfhir.resources.types import is_resource_type

__all__ = [
    "SUBSETTED",
    "SUMMARY_MODES",
    "check_elements",
    "element_names",
    "select_elements",
    "summarize",
]

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
# The `_summary` values that return a subset (`count` and `false` do not).
SUMMARY_MODES = frozenset({"true", "text", "data"})
_ALWAYS = frozenset({"resourceType", "id", "meta", "implicitRules", "modifierExtension"})

Model = type[FHIRAbstractModel]


@dataclass(frozen=True, slots=True)
class _Shape:
    """What `_summary` and `_elements` need to know about the elements of one model class.
    Keys are JSON property names without the `_` of primitive extensions."""

    elements: frozenset[str]
    summary: frozenset[str]
    mandatory: frozenset[str]  # a required choice counts all of its variants
    choices: dict[str, frozenset[str]]  # `value` -> valueQuantity, valueString...
    backbones: dict[str, Model]  # elements whose own elements are filtered by summary too


@cache
def _shape(model: Model) -> _Shape:
    elements: set[str] = set()
    summary: set[str] = set()
    mandatory: set[str] = set()
    choices: dict[str, set[str]] = {}
    backbones: dict[str, Model] = {}
    for name, info in model.model_fields.items():
        if name == "fhir_comments" or name.endswith("__ext"):
            continue
        key = info.alias or name
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        elements.add(key)
        if extra.get("summary_element_property") is True:
            summary.add(key)
        choice = extra.get("one_of_many")
        if isinstance(choice, str):
            choices.setdefault(choice, set()).add(key)
        if (
            info.is_required()
            or extra.get("element_required") is True
            or extra.get("one_of_many_required") is True
        ):
            mandatory.add(key)
        _, target = _field_type(info.annotation)
        if isinstance(target, type) and not is_root_type(target):
            backbones[key] = target
    return _Shape(
        frozenset(elements),
        frozenset(summary | mandatory),
        frozenset(mandatory),
        {name: frozenset(keys) for name, keys in choices.items()},
        backbones,
    )


@cache
def _type_shape(resource_type: str) -> _Shape | None:
    if not is_resource_type(resource_type):
        return None
    return _shape(get_fhir_model_class(resource_type))


def _keep(resource: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """The top-level elements named in `keys` (with their `_` extensions), tagged."""
    out = {k: v for k, v in resource.items() if (k[1:] if k.startswith("_") else k) in keys}
    return _tagged(out)


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(
        isinstance(t, dict)
        and t.get("system") == SUBSETTED["system"]
        and t.get("code") == SUBSETTED["code"]
        for t in tags
    ):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    if "meta" in resource:
        resource["meta"] = meta
        return resource
    # Where meta belongs: after resourceType and id.
    head: dict[str, Any] = {k: resource[k] for k in ("resourceType", "id") if k in resource}
    return {**head, "meta": meta, **{k: v for k, v in resource.items() if k not in head}}


def _summary_of(value: Any, model: Model, always: frozenset[str] = frozenset()) -> Any:
    if isinstance(value, list):
        return [_summary_of(item, model) for item in value]
    if not isinstance(value, dict):
        return value
    shape = _shape(model)
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = key[1:] if key.startswith("_") else key
        if name not in shape.summary and name not in always:
            continue
        child = shape.backbones.get(name)
        out[key] = _summary_of(item, child) if child is not None and key == name else item
    return out


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """The `_summary=true|text|data` form of a resource; `false` (or an unknown type)
    returns it unchanged."""
    resource_type = str(resource.get("resourceType"))
    shape = _type_shape(resource_type)
    if shape is None or mode not in SUMMARY_MODES:
        return resource
    if mode == "data":
        return _tagged({k: v for k, v in resource.items() if k != "text"})
    if mode == "text":
        return _keep(resource, _ALWAYS | shape.mandatory | {"text"})
    model = get_fhir_model_class(resource_type)
    summary: dict[str, Any] = _summary_of(resource, model, _ALWAYS)
    return _tagged(summary)


def _split(name: str) -> tuple[str | None, str]:
    """`Patient.name` -> ("Patient", "name"); `name` -> (None, "name"); a deeper path keeps
    its top-level element only (R4B allows top-level elements alone)."""
    head, _, rest = name.partition(".")
    if rest and is_resource_type(head):
        return head, rest.partition(".")[0]
    return None, head


def _expand(shape: _Shape, element: str) -> frozenset[str]:
    element = element.removesuffix("[x]")
    if element in shape.choices:
        return shape.choices[element]
    return frozenset({element}) if element in shape.elements or element in _ALWAYS else frozenset()


def element_names(
    resource_type: str, requested: Iterable[str], *, matched: bool
) -> frozenset[str] | None:
    """The top-level JSON keys `_elements` keeps in a resource of `resource_type`, or None to
    keep it whole. Unqualified names apply to the matches (`matched`); `Type.element`
    applies to every resource of that type, so `Patient.name` also trims included
    Patients."""
    shape = _type_shape(resource_type)
    if shape is None:
        return None
    keys: set[str] = set()
    applies = False
    for name in requested:
        qualifier, element = _split(name)
        if qualifier is None and not matched:
            continue
        if qualifier is not None and qualifier != resource_type:
            continue
        applies = True
        keys |= _expand(shape, element)
    if not applies:
        return None
    return frozenset(keys) | shape.mandatory | _ALWAYS


def select_elements(resource: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """The resource with only the top-level `keys` (from `element_names`), tagged."""
    return _keep(resource, keys)


def check_elements(resource_type: str | None, requested: Iterable[str]) -> None:
    """400 for an `_elements` name that is no element of its type: `Type.element` is
    checked against `Type`, a bare name against the searched type (if there is one)."""
    for name in requested:
        qualifier, element = _split(name)
        kind = qualifier or resource_type
        if kind is None:
            continue
        shape = _type_shape(kind)
        if shape is None or not _expand(shape, element):
            raise BadRequest(
                f"Invalid value for '_elements': '{name}' is not an element of {kind}",
                expression=["_elements"],
            )
