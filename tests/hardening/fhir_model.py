"""What each JSON property of an R4B type holds, read from the `fhir.resources.R4B` models,
for the fuzzer's strategies. Independent of cmfhir's own element tables on purpose: the
fuzzer should not share the validator's blind spots."""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.constraints import FHIR_PRIMITIVES_MAPS
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase

Model = type[FHIRAbstractModel]


@dataclass(frozen=True)
class Element:
    key: str  # the JSON property name
    is_list: bool
    type: str | Model  # a primitive type name (`code`, `dateTime`) or a model class
    required: bool
    codes: tuple[str, ...]  # the allowed codes of a `code` with a required binding


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _target(annotation: Any) -> tuple[bool, str | Model, bool]:
    annotation, optional = _unwrap(annotation)
    is_list = typing.get_origin(annotation) is list
    if is_list:
        annotation, _ = _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Annotated:
        for marker in typing.get_args(annotation)[1:]:
            name = FHIR_PRIMITIVES_MAPS.get(type(marker))
            if name is not None:
                return is_list, name, optional
        return is_list, "uuid", optional
    if annotation is bool:
        return is_list, "boolean", optional
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        model: Model = annotation.get_model_klass()
        return is_list, model, optional
    return is_list, "string", optional


@functools.cache
def elements(model: Model) -> tuple[Element, ...]:
    """The elements of a model class (`_birthDate`-style extension twins left out)."""
    found = []
    for name, info in model.model_fields.items():
        if name == "fhir_comments" or name.endswith("__ext"):
            continue
        is_list, target, optional = _target(info.annotation)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        codes = extra.get("enum_values") or ()
        found.append(
            Element(
                key=info.alias or name,
                is_list=is_list,
                type=target,
                required=bool(extra.get("element_required")) or not optional,
                codes=tuple(c for c in codes if isinstance(c, str) and c != "+"),
            )
        )
    return tuple(found)


def resource_elements(resource_type: str) -> tuple[Element, ...]:
    return elements(get_fhir_model_class(resource_type))
