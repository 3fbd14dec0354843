"""SDC observation-based extraction
(https://hl7.org/fhir/uv/sdc/extraction.html#observation-based-extraction) with the Gravity SDOH
Clinical Care pattern (https://hl7.org/fhir/us/sdoh-clinicalcare/): every enabled, answered
item with a `code` under `sdc-questionnaire-observationExtract` becomes an Observation, and
each need an answer reveals (the item's `sdoh-condition` extension) a Condition of category
health-concern whose evidence is those Observations. The result is a transaction Bundle of
conditional creates, so posting it twice creates nothing twice.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from cmfhir.errors import Unprocessable
from cmfhir.resources.questionnaire import Node, ResponseTree, answer_value, same_value

__all__ = ["EXTRACTED_SYSTEM", "SDOH_CONDITION", "extract_bundle"]

SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
OBSERVATION_EXTRACT = SDC + "sdc-questionnaire-observationExtract"
EXTRACT_CATEGORY = SDC + "sdc-questionnaire-observation-extract-category"
SDOH_CONDITION = "https://cmfhir.org/fhir/StructureDefinition/sdoh-condition"
# The identifiers of extracted resources: the response and the item they came from.
EXTRACTED_SYSTEM = "https://cmfhir.org/fhir/extracted-from"
_CONDITION_CATEGORIES = [
    {
        "coding": [
            {
                "system": "http://hl7.org/fhir/us/core/CodeSystem/condition-category",
                "code": "health-concern",
                "display": "Health Concern",
            }
        ]
    },
    {
        "coding": [
            {
                "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category",
                "code": "sdoh",
                "display": "SDOH",
            }
        ]
    },
]
_PERFORMERS = ("Practitioner/", "PractitionerRole/", "Organization/", "Patient/", "RelatedPerson/")
_ASSERTERS = ("Practitioner/", "PractitionerRole/", "Patient/", "RelatedPerson/")


def _extensions(element: dict[str, Any], url: str) -> list[dict[str, Any]]:
    found = element.get("extension")
    if not isinstance(found, list):
        return []
    return [e for e in found if isinstance(e, dict) and e.get("url") == url]


def _inherited(tree: ResponseTree, node: Node, url: str) -> list[dict[str, Any]]:
    """The extensions `url` of the node's item, else of the nearest ancestor item that has
    any, else of the Questionnaire."""
    for holder in (node, *reversed(node.ancestors)):
        if holder.definition is not None:
            found = _extensions(holder.definition, url)
            if found:
                return found
    return _extensions(tree.questionnaire, url)


def _observation_value(key: str, value: Any) -> tuple[str, Any] | None:
    """An answer as an Observation.value[x] (None for kinds an Observation cannot hold)."""
    if key == "valueCoding":
        return "valueCodeableConcept", {"coding": [value]}
    if key == "valueDecimal":
        return "valueQuantity", {"value": value}
    if key == "valueDate":
        return "valueDateTime", value
    if key == "valueUri":
        return "valueString", value
    if key in (
        "valueBoolean",
        "valueInteger",
        "valueString",
        "valueDateTime",
        "valueTime",
        "valueQuantity",
    ):
        return key, value
    return None


def _reference_to(value: Any, allowed: tuple[str, ...]) -> dict[str, Any] | None:
    if isinstance(value, dict) and str(value.get("reference", "")).startswith(allowed):
        return {"reference": value["reference"]}
    return None


class _Extraction:
    def __init__(self, questionnaire: dict[str, Any], response: dict[str, Any]) -> None:
        self.tree = ResponseTree(questionnaire, response)
        self.response = response
        self.id = response.get("id") if isinstance(response.get("id"), str) else None
        self.entries: list[dict[str, Any]] = []
        self.occurrences: dict[str, int] = {}
        # condition key -> (code, evidence fullUrls)
        self.needs: dict[str, tuple[dict[str, Any], list[str]]] = {}

    def _identifier(self, *parts: str) -> dict[str, str] | None:
        if self.id is None:
            return None
        value = "/".join(("QuestionnaireResponse", self.id, *parts))
        return {"system": EXTRACTED_SYSTEM, "value": value}

    def _add(self, resource: dict[str, Any], identifier: dict[str, str] | None) -> str:
        full_url = f"urn:uuid:{uuid.uuid4()}"
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if identifier is not None:
            resource["identifier"] = [identifier]
            criteria = f"{identifier['system']}|{identifier['value']}"
            request["ifNoneExist"] = "identifier=" + quote(criteria, safe="/:|")
        self.entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        return full_url

    def _common(self, resource: dict[str, Any]) -> None:
        for key in ("subject", "encounter"):
            if isinstance(self.response.get(key), dict):
                resource[key] = self.response[key]

    def observation(self, node: Node, answer: dict[str, Any], index: int) -> str | None:
        assert node.definition is not None
        found = answer_value(answer)
        value = _observation_value(*found) if found is not None else None
        if value is None:
            return None
        categories = [
            e["valueCodeableConcept"]
            for e in _inherited(self.tree, node, EXTRACT_CATEGORY)
            if isinstance(e.get("valueCodeableConcept"), dict)
        ]
        code: dict[str, Any] = {"coding": node.definition["code"]}
        if isinstance(node.definition.get("text"), str):
            code["text"] = node.definition["text"]
        observation: dict[str, Any] = {"resourceType": "Observation", "status": "final"}
        if categories:
            observation["category"] = categories
        observation["code"] = code
        self._common(observation)
        if isinstance(self.response.get("authored"), str):
            observation["effectiveDateTime"] = self.response["authored"]
        performer = _reference_to(
            self.response.get("source") or self.response.get("author"), _PERFORMERS
        )
        if performer is not None:
            observation["performer"] = [performer]
        observation[value[0]] = value[1]
        if self.id is not None:
            observation["derivedFrom"] = [{"reference": f"QuestionnaireResponse/{self.id}"}]
        link_id = str(node.link_id)
        seen = self.occurrences.get(link_id, 0)
        self.occurrences[link_id] = seen + 1
        parts = [link_id] + ([str(seen)] if seen else []) + ([str(index)] if index else [])
        return self._add(observation, self._identifier(*parts))

    def need(self, node: Node, answer: dict[str, Any], evidence: str | None) -> None:
        assert node.definition is not None
        found = answer_value(answer)
        for extension in _extensions(node.definition, SDOH_CONDITION):
            parts = {
                e.get("url"): e for e in extension.get("extension") or () if isinstance(e, dict)
            }
            signal = parts.get("answer", {}).get("valueCoding")
            code = parts.get("code", {}).get("valueCodeableConcept")
            if found is None or found[0] != "valueCoding" or not isinstance(code, dict):
                continue
            if not same_value("Coding", found[1], signal):
                continue
            first = (code.get("coding") or [{}])[0]
            key = f"{first.get('system')}|{first.get('code')}"
            _, proofs = self.needs.setdefault(key, (code, []))
            if evidence is not None:
                proofs.append(evidence)

    def conditions(self) -> None:
        for key, (code, evidence) in self.needs.items():
            condition: dict[str, Any] = {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "unconfirmed",
                        }
                    ]
                },
                "category": _CONDITION_CATEGORIES,
                "code": code,
            }
            self._common(condition)
            if isinstance(self.response.get("authored"), str):
                condition["recordedDate"] = self.response["authored"]
            asserter = _reference_to(self.response.get("source"), _ASSERTERS)
            if asserter is not None:
                condition["asserter"] = asserter
            if evidence:
                condition["evidence"] = [{"detail": [{"reference": url} for url in evidence]}]
            self._add(condition, self._identifier("condition", key.rsplit("|", 1)[-1]))

    def run(self) -> dict[str, Any]:
        for node in self.tree.nodes:
            definition = node.definition
            if definition is None or not node.answers() or not self.tree.enabled(node):
                continue
            flags = _inherited(self.tree, node, OBSERVATION_EXTRACT)
            extract = bool(flags) and flags[0].get("valueBoolean") is True
            for index, answer in enumerate(node.answers()):
                evidence = None
                if extract and definition.get("code"):
                    evidence = self.observation(node, answer, index)
                self.need(node, answer, evidence)
        self.conditions()
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


def extract_bundle(questionnaire: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The transaction Bundle of what `response` (answering `questionnaire`) yields."""
    subject = response.get("subject")
    if not isinstance(subject, dict) or not subject.get("reference"):
        raise Unprocessable(
            "The QuestionnaireResponse has no subject to record the extracted data about",
            expression=["QuestionnaireResponse.subject"],
        )
    return _Extraction(questionnaire, response).run()
