"""Content negotiation (https://hl7.org/fhir/R4/http.html#mime-type,
https://hl7.org/fhir/R4/versioning.html#mt-version): cmfhir serves JSON only, in the FHIR
version the client names with the `fhirVersion` MIME parameter (R4 by default).

`_format` overrides `Accept`. A request that can only take XML or Turtle gets 406; an
`Accept` that names nothing cmfhir recognises (or is not a media type at all) is served
JSON, as HTTP allows. The version comes from the chosen `Accept` range or `_format`, else
from the body's `Content-Type`, else the default."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cmfhir.errors import NotAcceptable, UnsupportedMediaType
from cmfhir.resources.fhir_versions import DEFAULT_VERSION, VERSIONS, parse_version

__all__ = ["Negotiated", "negotiate"]

JSON_RANGES = frozenset(
    {"application/fhir+json", "application/json", "application/json+fhir", "text/json", "json"}
)
ANY_RANGES = frozenset({"*/*", "application/*"})
REFUSED = frozenset(
    {
        "application/fhir+xml",
        "application/xml+fhir",
        "application/xml",
        "text/xml",
        "xml",
        "text/turtle",
        "application/fhir+turtle",
        "application/x-turtle",
        "ttl",
        "turtle",
    }
)
PLAIN_JSON = frozenset({"application/json", "text/json"})


def _version_code(text: str) -> str | None:
    return parse_version(text.strip().strip('"'))


@dataclass(frozen=True, slots=True)
class Negotiated:
    fhir_version: str
    # The client asked for plain `application/json` (not `application/fhir+json`).
    plain_json: bool = False


@dataclass(frozen=True, slots=True)
class _Range:
    kind: str
    params: dict[str, str]
    q: float


def _range(text: str) -> _Range | None:
    kind, *rest = text.split(";")
    kind = kind.strip().lower()
    if not kind:
        return None
    params: dict[str, str] = {}
    for item in rest:
        key, _, value = item.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        q = 1.0
    return _Range(kind, params, q if 0 <= q <= 1 else 1.0)


def _ranges(header: str) -> list[_Range]:
    found = [r for r in (_range(part) for part in header.split(",")) if r is not None]
    # Highest q first; among equals, the order sent (sort is stable).
    return sorted((r for r in found if r.q > 0), key=lambda r: -r.q)


def _version(value: str, where: str) -> str:
    code = _version_code(value)
    if code is None:
        served = ", ".join(VERSIONS)
        raise NotAcceptable(
            f"fhirVersion '{value}' in {where} is not served; this server speaks {served} "
            f"(default {DEFAULT_VERSION})",
            expression=[where],
        )
    return code


def _refuse_format(asked: str, where: str) -> NotAcceptable:
    return NotAcceptable(
        f"{where} asks for '{asked}'; cmfhir serves JSON only (application/fhir+json)",
        expression=[where],
    )


def _from_format(value: str) -> tuple[str | None, bool]:
    # An unencoded `+` in a query string arrives as a space: `application/fhir json`.
    chosen = _range(value.replace(" ", "+"))
    if chosen is None or chosen.kind not in JSON_RANGES:
        raise _refuse_format(value, "_format")
    version = chosen.params.get("fhirversion")
    return (
        _version(version, "_format") if version is not None else None,
        chosen.kind in PLAIN_JSON,
    )


def _from_accept(header: str) -> tuple[str | None, bool]:
    ranges = _ranges(header)
    usable = [r for r in ranges if r.kind in JSON_RANGES or r.kind in ANY_RANGES]
    if not usable:
        refused = [r.kind for r in ranges if r.kind in REFUSED]
        if refused:
            raise _refuse_format(refused[0], "Accept")
        return None, False
    unsupported: str | None = None
    for candidate in usable:
        version = candidate.params.get("fhirversion")
        if version is None:
            return None, candidate.kind in PLAIN_JSON
        code = _version_code(version)
        if code is not None:
            return code, candidate.kind in PLAIN_JSON
        unsupported = unsupported or version
    assert unsupported is not None
    return _version(unsupported, "Accept"), False


def _from_content_type(header: str | None) -> str | None:
    if not header:
        return None
    chosen = _range(header)
    version = chosen.params.get("fhirversion") if chosen is not None else None
    if version is None:
        return None
    code = _version_code(version)
    if code is None:
        raise UnsupportedMediaType(
            f"fhirVersion '{version}' in Content-Type is not served; this server speaks "
            f"{', '.join(VERSIONS)}",
            expression=["Content-Type"],
        )
    return code


# Clients send the same few headers over and over; remembering short ones makes
# negotiation a dictionary look-up (errors are not remembered, and are rare).
_CACHED_LENGTH = 200


def negotiate(accept: str | None, format_: str | None, content_type: str | None) -> Negotiated:
    """The version and flavour of JSON to answer in, or NotAcceptable (406)."""
    if sum(len(h) for h in (accept, format_, content_type) if h) <= _CACHED_LENGTH:
        return _negotiate_cached(accept, format_, content_type)
    return _negotiate(accept, format_, content_type)


@lru_cache(maxsize=256)
def _negotiate_cached(
    accept: str | None, format_: str | None, content_type: str | None
) -> Negotiated:
    return _negotiate(accept, format_, content_type)


def _negotiate(accept: str | None, format_: str | None, content_type: str | None) -> Negotiated:
    if format_ is not None:
        version, plain = _from_format(format_)
    elif accept:
        version, plain = _from_accept(accept)
    else:
        version, plain = None, False
    if version is None:
        version = _from_content_type(content_type) or DEFAULT_VERSION
    return Negotiated(version, plain)
