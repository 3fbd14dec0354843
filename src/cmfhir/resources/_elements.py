"""Element tables: what each JSON property of a FHIR R4B type holds, read once per model
class from the `fhir.resources.R4B` field annotations (https://hl7.org/fhir/R4B/json.html).

The annotations are the R4B StructureDefinitions as fhir.resources generated them: type,
cardinality (a list or one value; `element_required` or a required field for min 1) and
choice groups. The validator walks resources with these tables instead of re-reading
annotations or building models, so each model class is introspected once per
`ElementTables` and no model is constructed per write. A table also knows its element's
definition path (`Patient.contact`, `Timing.repeat`), which keys the required bindings.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.constraints import FHIR_PRIMITIVES_MAPS
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase

__all__ = [
    "BOOLEAN",
    "COMPLEX",
    "DECIMAL",
    "INTEGER",
    "PRIMITIVE",
    "PRIMITIVE_EXTENSION",
    "RESOURCE",
    "STRING",
    "Binding",
    "Element",
    "ElementTables",
    "Table",
]

Model = type[FHIRAbstractModel]

# What an element holds.
PRIMITIVE, COMPLEX, RESOURCE, PRIMITIVE_EXTENSION = range(4)
# The JSON type a primitive is written as (https://hl7.org/fhir/R4B/json.html#primitive).
BOOLEAN, INTEGER, DECIMAL, STRING = range(4)
_JSON_KINDS = {
    "boolean": BOOLEAN,
    "integer": INTEGER,
    "unsignedInt": INTEGER,
    "positiveInt": INTEGER,
    "decimal": DECIMAL,
}

# String formats fhir.resources does not enforce (its patterns are unanchored searches, or
# absent). Regexes from https://hl7.org/fhir/R4B/datatypes.html#primitive.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CODE = re.compile(r"[^\s]+( [^\s]+)*")
_NO_WHITESPACE = re.compile(r"\S+")
_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")
_UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_WHITESPACE = re.compile(r"\s+")


def _is_base64(value: str) -> bool:
    return _BASE64.fullmatch(_WHITESPACE.sub("", value)) is not None


def _is_xhtml_div(value: str) -> bool:
    # Only the outer shape; the narrative's XHTML rules (no scripts, forms...) are not checked.
    return value.lstrip().startswith("<div")


_FORMATS: dict[str, tuple[Callable[[str], object], str]] = {
    "id": (_ID.fullmatch, "an id (1-64 characters: letters, digits, '-' and '.')"),
    "code": (_CODE.fullmatch, "a code (no leading, trailing or repeated whitespace)"),
    "uri": (_NO_WHITESPACE.fullmatch, "a uri (no whitespace)"),
    "url": (_NO_WHITESPACE.fullmatch, "a url (no whitespace)"),
    "canonical": (_NO_WHITESPACE.fullmatch, "a canonical URL (no whitespace)"),
    "oid": (_OID.fullmatch, "an oid (urn:oid:1.2.3)"),
    "uuid": (_UUID.fullmatch, "a uuid (urn:uuid: and a lower-case UUID)"),
    "base64Binary": (_is_base64, "base64 data"),
    "xhtml": (_is_xhtml_div, 'an XHTML <div xmlns="http://www.w3.org/1999/xhtml">'),
}


# What the fhir.resources models checked on every write before the walk did it itself
# (https://hl7.org/fhir/R4B/datatypes.html#primitive): dates and times by the spec's
# regexes plus a real calendar day, integer ranges, and a string holding more than
# whitespace. Each returns a message, or None for a valid value. Reported after the walk's
# own problems, as the models' were (see validation.py).
_DATE = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
    r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"
)
_DATE_TIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
    r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    r"(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)
_INSTANT = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])"
    r"-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    r"(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?")
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Unicode White_Space but the four a FHIR string may hold: a string made only of these
# (vertical tab, no-break space, line separator...) is not a FHIR string.
_OTHER_WHITE_SPACE = (
    "\x0b\x0c\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _real_day(value: str) -> bool:
    """Whether `YYYY-MM-DD...` names a day of the calendar (the regexes allow 02-31)."""
    day = int(value[8:10])
    if day <= 28:
        return True
    month = int(value[5:7])
    if month != 2:
        return day <= _DAYS_IN_MONTH[month]
    year = int(value[:4])
    return day == 29 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _date(value: str) -> str | None:
    if _DATE.fullmatch(value) is None:
        return "not a valid FHIR date"
    if len(value) == 10 and not _real_day(value):
        return "not a valid FHIR date: no such day"
    return None


def _date_time(value: str) -> str | None:
    if _DATE_TIME.fullmatch(value) is None:
        return "not a valid FHIR dateTime"
    if len(value) >= 10 and not _real_day(value):
        return "not a valid FHIR dateTime: no such day"
    return None


def _instant(value: str) -> str | None:
    if _INSTANT.fullmatch(value) is None:
        return "not a valid FHIR instant"
    if not _real_day(value):
        return "not a valid FHIR instant: no such day"
    return None


def _time(value: str) -> str | None:
    return None if _TIME.fullmatch(value) is not None else "not a valid FHIR time"


def _string(value: str) -> str | None:
    if value.strip(_OTHER_WHITE_SPACE):
        return None
    return "a string must hold more than whitespace"


def _range(low: int, name: str) -> Callable[[Any], str | None]:
    high = 2**31 - 1

    def check(value: Any) -> str | None:
        if value > high:
            return f"must be less than or equal to {high} (FHIR {name})"
        if value < low:
            return f"must be greater than or equal to {low} (FHIR {name})"
        return None

    return check


def _finite(value: Any) -> str | None:
    # Parsed JSON holds only finite numbers; a float or Decimal handed in by code may not.
    if type(value) is int:
        return None
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    return None if finite else "not a valid FHIR decimal"


_VALUES: dict[str, Callable[[Any], str | None]] = {
    "date": _date,
    "dateTime": _date_time,
    "instant": _instant,
    "time": _time,
    "string": _string,
    "integer": _range(-(2**31), "integer"),
    "unsignedInt": _range(0, "unsignedInt"),
    "positiveInt": _range(1, "positiveInt"),
    "decimal": _finite,
}


@dataclass(frozen=True, slots=True)
class Binding:
    """A required binding: the element must hold one of `codes`."""

    path: str
    value_set: str
    codes: frozenset[str]
    allowed: str  # the codes, listed for a message


@dataclass(frozen=True, slots=True)
class Element:
    """One JSON property. `_birthDate` and `birthDate` are two elements named `birthDate`."""

    name: str  # FHIRPath name: `given` for both `given` and `_given`
    kind: int
    is_list: bool
    type_name: str  # FHIR type: `code`, `HumanName`, `Resource`...
    model: Model | None = None
    json_kind: int = STRING
    check: Callable[[str], object] | None = None
    format_name: str = ""
    binding: Binding | None = None
    choice: str | None = None  # `deceased` for deceasedBoolean and deceasedDateTime
    value_check: Callable[[Any], str | None] | None = None  # see _VALUES


@dataclass(slots=True)
class Table:
    """The elements of one model class, keyed by JSON property name."""

    path: str
    is_resource: bool
    elements: dict[str, Element] = field(default_factory=dict)
    required_choices: tuple[str, ...] = ()
    # Elements of minimum cardinality 1: (JSON key, key of its primitive extension or None,
    # fhir.resources' own name for it when another: `class_fhir`). A required primitive may
    # be absent when its `_key` holds an extension (a data-absent-reason):
    # https://hl7.org/fhir/R4B/extensibility.html#Special-Case. The own name is refused as
    # an unknown element; it is not reported missing besides, as the models did not.
    required: tuple[tuple[str, str | None, str | None], ...] = ()
    # `_birthDate: {...}`: holds an id or extensions (an object of neither says nothing).
    needs_id_or_extension: bool = False


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        # FHIRResourceModel.id is `Id | String`; concrete resources narrow it to Id.
        return args[0]
    return annotation


def _field_type(annotation: Any) -> tuple[bool, str | Model]:
    """(is_list, FHIR primitive type name or model class) of a field annotation."""
    annotation = _unwrap_optional(annotation)
    is_list = typing.get_origin(annotation) is list
    if is_list:
        annotation = _unwrap_optional(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Annotated:
        for marker in typing.get_args(annotation)[1:]:
            name = FHIR_PRIMITIVES_MAPS.get(type(marker))
            if name is not None:
                return is_list, name
        if typing.get_args(annotation)[0].__name__ == "UUID":  # pydantic's UUID4
            return is_list, "uuid"
    if annotation is bool:
        return is_list, "boolean"
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        model: Model = annotation.get_model_klass()
        return is_list, model
    raise TypeError(f"unexpected field annotation {annotation!r}")


def is_root_type(model: Model) -> bool:
    """A resource or datatype, as opposed to a backbone element (PatientContact), which
    fhir.resources defines in its owner's module."""
    return model.__module__.rpartition(".")[2] == model.__name__.lower()


class ElementTables:
    """Element tables for every model class reached, built on first use and kept."""

    def __init__(self, bindings: Mapping[str, Binding], *, own_checks: bool = True) -> None:
        """With `own_checks` off the tables leave out what the fhir.resources models check
        (required elements, dates, ranges): the validation before the walk did it, kept to
        compare the two (see ResourceValidator's `models`)."""
        self._bindings = bindings
        self._own_checks = own_checks
        self._tables: dict[Model, Table] = {}
        self._paths: dict[Model, str] = {}

    def for_type(self, type_name: str) -> Table:
        return self.table(get_fhir_model_class(type_name))

    def table(self, model: Model) -> Table:
        found = self._tables.get(model)
        if found is None:
            found = self._tables[model] = self._build(model)
        return found

    def _build(self, model: Model) -> Table:
        if is_root_type(model):
            self._name_backbones(model)
        path = self._paths.get(model, model.__name__)
        table = Table(path=path, is_resource=model.has_resource_base())
        lookup_paths = [path]
        if is_root_type(model):
            # Age.comparator first, then Quantity.comparator from the base class.
            lookup_paths += [
                base.__name__
                for base in model.__mro__[1:]
                if isinstance(base, type) and issubclass(base, FHIRAbstractModel)
            ]
        required_choices: list[str] = []
        minimum_one: list[tuple[str, str | None, str | None]] = []
        for field_name, info in model.model_fields.items():
            if field_name == "fhir_comments":  # not FHIR JSON; fhir.resources' own extra
                continue
            key = info.alias or field_name
            is_list, target = _field_type(info.annotation)
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            choice = extra.get("one_of_many")
            choice = choice if isinstance(choice, str) else None
            required = extra.get("one_of_many_required") is True
            if choice is not None and required and choice not in required_choices:
                required_choices.append(choice)
            if info.is_required() or extra.get("element_required") is True:
                ext_key = f"_{key}" if isinstance(target, str) else None
                minimum_one.append((key, ext_key, field_name if field_name != key else None))
            if field_name.endswith("__ext"):
                table.elements[key] = Element(
                    name=key[1:],
                    kind=PRIMITIVE_EXTENSION,
                    is_list=is_list,
                    type_name="Element",
                    model=target if isinstance(target, type) else None,
                )
            elif isinstance(target, str):
                table.elements[key] = self._primitive(key, target, is_list, choice, lookup_paths)
            else:
                kind = RESOURCE if target.__name__ == "Resource" else COMPLEX
                table.elements[key] = Element(
                    name=key,
                    kind=kind,
                    is_list=is_list,
                    type_name=target.__name__,
                    model=target,
                    choice=choice,
                )
        # `_valueString` belongs to the value[x] choice like `valueString` does.
        for key, element in list(table.elements.items()):
            if element.kind == PRIMITIVE_EXTENSION:
                primitive = table.elements.get(element.name)
                if primitive is not None and primitive.choice is not None:
                    table.elements[key] = replace(element, choice=primitive.choice)
        table.required_choices = tuple(required_choices)
        if self._own_checks:
            table.required = tuple(minimum_one)
            table.needs_id_or_extension = model.__name__ == "FHIRPrimitiveExtension"
        return table

    def _primitive(
        self, key: str, type_name: str, is_list: bool, choice: str | None, paths: list[str]
    ) -> Element:
        check, format_name = _FORMATS.get(type_name, (None, ""))
        binding = None
        if type_name == "code" and choice is None:
            for path in paths:
                binding = self._bindings.get(f"{path}.{key}")
                if binding is not None:
                    break
        return Element(
            name=key,
            kind=PRIMITIVE,
            is_list=is_list,
            type_name=type_name,
            json_kind=_JSON_KINDS.get(type_name, STRING),
            check=check,
            format_name=format_name,
            binding=binding,
            choice=choice,
            value_check=_VALUES.get(type_name) if self._own_checks else None,
        )

    def _name_backbones(self, root: Model) -> None:
        """Give each backbone class of a root type its definition path. A class reused through
        a contentReference (ValueSet.compose.exclude is a compose.include) is reached by
        several paths; the one its name spells (ValueSetComposeInclude) is where it is
        defined, and so where its bindings are keyed."""
        queue: deque[tuple[Model, str]] = deque([(root, root.__name__)])
        while queue:
            model, path = queue.popleft()
            for field_name, info in model.model_fields.items():
                if field_name == "fhir_comments" or field_name.endswith("__ext"):
                    continue
                _, target = _field_type(info.annotation)
                if not isinstance(target, type) or is_root_type(target):
                    continue
                child = f"{path}.{info.alias or field_name}"
                known = self._paths.get(target)
                # Each class is named at most twice: first reached, then where defined.
                if known is None or (not _spells(known, target) and _spells(child, target)):
                    self._paths[target] = child
                    queue.append((target, child))


def _spells(path: str, model: Model) -> bool:
    """Whether fhir.resources' class name for the element at `path` is `model`'s name:
    `Timing.repeat` spells TimingRepeat."""
    root, *parts = path.split(".")
    return root + "".join(part[:1].upper() + part[1:] for part in parts) == model.__name__
