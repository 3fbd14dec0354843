"""Narrative XHTML (txt-1, txt-2): only what FHIR allows, nothing a browser would run."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmfhir.errors import InvalidResource
from cmfhir.resources import validate_resource
from cmfhir.resources.narrative import load_narrative_rules

RULES = load_narrative_rules(Path(__file__).parents[2] / "profiles" / "narrative-xhtml.json")
NS = 'xmlns="http://www.w3.org/1999/xhtml"'


def div(inner: str, attributes: str = "") -> str:
    return f"<div {NS}{attributes}>{inner}</div>"


ACCEPTED = [
    pytest.param(div("Ann Smith"), id="text"),
    pytest.param(
        div("<p>Ann <b>Smith</b> &amp; <i>co</i> &#169;</p>"), id="formatting-and-entities"
    ),
    pytest.param(
        div(
            '<table class="grid"><tr><td style="background-image: url(tbl.png)">1</td></tr></table>'
        ),
        id="table-with-image-style",
    ),
    pytest.param(div('<a href="https://example.org/x">x</a> <a name="top">t</a>'), id="links"),
    pytest.param(div('<img src="#photo" alt="photo"/>'), id="image-only"),
    pytest.param(div("<pre>\n  </pre>"), id="preformatted-whitespace"),
    pytest.param(
        div('<img src="data:image/png;base64,iVBORw0KGgo=" alt="x"/>'), id="image-data-url"
    ),
    pytest.param(div('<span lang="en" xml:lang="en">hi</span>'), id="xml-lang"),
    pytest.param(f'<div {NS} xmlns:x="urn:x">ok</div>', id="extra-namespace-declaration"),
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_accepted(value: str) -> None:
    assert RULES.problems(value) == []


REFUSED = [
    pytest.param(div("<script>alert(1)</script>"), "<script> is not allowed", id="script"),
    pytest.param(
        div('<p onclick="alert(1)">x</p>'), "'onclick' on <p> is not allowed (event", id="onclick"
    ),
    pytest.param(div('<img src="x" onerror="alert(1)"/>'), "'onerror'", id="onerror"),
    pytest.param(
        div('<a href="javascript:alert(1)">x</a>'), "javascript: URL", id="javascript-href"
    ),
    pytest.param(
        div('<a href=" jAvA&#x09;script:alert(1)">x</a>'), "javascript: URL", id="obfuscated-scheme"
    ),
    pytest.param(div('<a href="data:text/html,&lt;script&gt;">x</a>'), "data: URL", id="data-href"),
    pytest.param(div('<img src="vbscript:x"/>'), "vbscript: URL", id="vbscript-src"),
    pytest.param(
        div('<p style="width: expression(alert(1))">x</p>'), "'expression('", id="css-expression"
    ),
    pytest.param(
        div('<p style="background: url(javascript:alert(1))">x</p>'),
        "'javascript:'",
        id="css-javascript",
    ),
    pytest.param(div('<iframe src="https://x"></iframe>'), "<iframe> is not allowed", id="iframe"),
    pytest.param(div("<form><input/></form>"), "<form> is not allowed", id="form"),
    pytest.param(div('<object data="x">x</object>'), "<object>", id="object"),
    pytest.param(div("<style>p{}</style>x"), "<style>", id="style-element"),
    pytest.param(
        div('<a xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href="x">x</a>'),
        "xlink",
        id="xlink",
    ),
    pytest.param(
        div('<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>'),
        "outside the XHTML namespace",
        id="svg",
    ),
    pytest.param("<div>x</div>", "outside the XHTML namespace", id="no-namespace"),
    pytest.param(f"<p {NS}>x</p>", "must be a <div", id="not-a-div"),
    pytest.param(div("<p>x"), "not well-formed", id="unclosed"),
    pytest.param(div("a &nbsp; b"), "not well-formed", id="html-entity"),
    pytest.param(div("x") + "<div>y</div>", "not well-formed", id="two-roots"),
    pytest.param(
        '<!DOCTYPE div [<!ENTITY a "aaaa">]>' + div("&a;"), "DOCTYPE", id="doctype-entities"
    ),
    pytest.param(
        div('<?xml-stylesheet href="x"?>x'), "processing instructions", id="processing-instruction"
    ),
    pytest.param(
        div("   <p> </p> "),
        "txt-2: The narrative SHALL have some non-whitespace content",
        id="txt-2-empty",
    ),
]


@pytest.mark.parametrize(("value", "text"), REFUSED)
def test_refused(value: str, text: str) -> None:
    problems = RULES.problems(value)
    assert problems, value
    assert any(text in problem for problem in problems), problems
    assert all(problem.startswith(("txt-1: ", "txt-2: ")) for problem in problems)


def test_a_resource_with_a_script_in_its_narrative_is_refused_at_the_div() -> None:
    patient = {
        "resourceType": "Patient",
        "text": {"status": "generated", "div": div("<script>alert(1)</script>")},
    }
    with pytest.raises(InvalidResource) as caught:
        validate_resource(patient)
    (issue,) = caught.value.issues
    assert issue.expression == ("Patient.text.div",)
    assert "txt-1: <script> is not allowed" in issue.diagnostics


def test_narrative_inside_a_contained_resource_is_checked() -> None:
    patient = {
        "resourceType": "Patient",
        "contained": [
            {
                "resourceType": "Organization",
                "id": "o",
                "name": "A",
                "text": {"status": "generated", "div": div('<a href="javascript:x()">a</a>')},
            }
        ],
        "managingOrganization": {"reference": "#o"},
    }
    with pytest.raises(InvalidResource) as caught:
        validate_resource(patient)
    assert [i.expression for i in caught.value.issues] == [("Patient.contained[0].text.div",)]
