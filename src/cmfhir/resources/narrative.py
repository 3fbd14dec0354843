"""Narrative XHTML checks (txt-1, txt-2 of https://hl7.org/fhir/R4B/narrative.html): the div
is well-formed XML, an XHTML `div`, holds only the elements and attributes txt-1 names
(`profiles/narrative-xhtml.json`), no active content, and some content: non-whitespace text,
an image, or a `<pre>` (whose whitespace is content).

The care-team console renders narrative, so "no active content" is read strictly: besides
the names txt-1 leaves out (`script`, `form`, `iframe`, `object`, `on*` handlers...), URL
attributes may not use `javascript:`, `vbscript:` or (except an image's `src`) `data:`, and
`style` may not load or run anything (`url(`, `expression(`, `@import`, `behavior`,
`-moz-binding`). Parsed with the standard library's expat: a DOCTYPE, entity declarations
and processing instructions are refused before anything else, so nothing expands.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

__all__ = ["NarrativeRules", "load_narrative_rules"]

XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_SEPARATOR = "\x1f"  # expat's namespace separator: one no name can contain
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc"})
_BAD_SCHEMES = ("javascript:", "vbscript:", "data:")
_STYLE_ACTIVE = ("expression(", "@import", "behavior", "-moz-binding", "javascript:")
# Characters browsers ignore inside a URL scheme (`java\tscript:`).
_IGNORED_IN_SCHEME = re.compile(r"[\x00-\x20]+")
_IMAGE_DATA = re.compile(r"data:image/(png|gif|jpeg|bmp|webp);", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class NarrativeRules:
    elements: frozenset[str]
    attributes: frozenset[str]
    txt_1: str  # the human text of each constraint, for messages
    txt_2: str

    def problems(self, div: str) -> list[str]:
        """What is wrong with a Narrative.div value, each message naming its constraint;
        empty when the div is acceptable."""
        checker = _Checker(self)
        parser = expat.ParserCreate(namespace_separator=_SEPARATOR)
        parser.StartElementHandler = checker.start
        parser.CharacterDataHandler = checker.text
        parser.StartDoctypeDeclHandler = checker.doctype
        parser.EntityDeclHandler = checker.entity
        parser.ProcessingInstructionHandler = checker.instruction
        try:
            parser.Parse(div, True)
        except _Refused as refused:
            return [f"txt-1: {refused}"]
        except expat.ExpatError as error:
            reason = expat.errors.messages.get(error.code, "not well-formed")
            return [
                f"txt-1: the div is not well-formed XHTML ({reason}, line {error.lineno}, "
                f"column {error.offset + 1})"
            ]
        found = checker.found
        if not checker.has_content:
            found.append(f"txt-2: {self.txt_2}")
        return found


class _Refused(Exception):
    """Markup that must not be parsed any further."""


class _Checker:
    def __init__(self, rules: NarrativeRules) -> None:
        self.rules = rules
        self.found: list[str] = []
        self.depth = 0
        self.has_content = False

    def doctype(self, *_: object) -> None:
        raise _Refused("a DOCTYPE is not allowed in narrative")

    def entity(self, *_: object) -> None:
        raise _Refused("entity declarations are not allowed in narrative")

    def instruction(self, *_: object) -> None:
        raise _Refused("processing instructions are not allowed in narrative")

    def text(self, data: str) -> None:
        if not self.has_content and data.strip():
            self.has_content = True

    def start(self, name: str, attributes: dict[str, str]) -> None:
        namespace, _, local = name.rpartition(_SEPARATOR)
        first = self.depth == 0
        self.depth += 1
        if first and (local != "div" or namespace != XHTML_NS):
            self.found.append(
                f'txt-1: the narrative must be a <div xmlns="{XHTML_NS}">, found <{local}>'
                + ("" if namespace == XHTML_NS else " outside the XHTML namespace")
            )
            return
        if namespace != XHTML_NS:
            self.found.append(f"txt-1: <{local}> is outside the XHTML namespace")
        elif local not in self.rules.elements:
            self.found.append(f"txt-1: <{local}> is not allowed in narrative ({self.rules.txt_1})")
        elif local == "pre":
            self.has_content = True  # its whitespace is what it shows (R4 examples have it)
        for key, value in attributes.items():
            self._attribute(local, key, value)

    def _attribute(self, element: str, key: str, value: str) -> None:
        namespace, _, attribute = key.rpartition(_SEPARATOR)
        if namespace == _XML_NS and attribute == "lang":
            return
        if namespace or attribute not in self.rules.attributes:
            shown = f"{namespace}:{attribute}" if namespace else attribute
            why = " (event handlers are active content)" if attribute.startswith("on") else ""
            self.found.append(f"txt-1: attribute {shown!r} on <{element}> is not allowed{why}")
            return
        if attribute in _URL_ATTRIBUTES:
            scheme = _IGNORED_IN_SCHEME.sub("", value).lower()
            if scheme.startswith(_BAD_SCHEMES) and not (
                element == "img" and attribute == "src" and _IMAGE_DATA.match(scheme)
            ):
                self.found.append(
                    f"txt-1: {attribute} on <{element}> uses a {scheme.split(':', 1)[0]}: URL "
                    "(active content is not allowed)"
                )
            if element == "img" and attribute == "src" and value.strip():
                self.has_content = True
        elif attribute == "style":
            folded = _IGNORED_IN_SCHEME.sub("", value).lower().replace("\\", "")
            for active in _STYLE_ACTIVE:
                if active in folded:
                    self.found.append(
                        f"txt-1: style on <{element}> contains {active!r} (external or active "
                        "content is not allowed)"
                    )
                    break


def load_narrative_rules(path: Path) -> NarrativeRules:
    """Read `narrative-xhtml.json` (see scripts/derive_invariants.py)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return NarrativeRules(
        elements=frozenset(document["elements"]),
        attributes=frozenset(document["attributes"]),
        txt_1=document["txt-1"],
        txt_2=document["txt-2"],
    )
