"""Responses to the Questionnaires of profiles/content/, good ones to start from."""

from __future__ import annotations

import copy
from typing import Any

BASE = "https://cmfhir.org/fhir"
LOINC = "http://loinc.org"
YES = {"system": LOINC, "code": "LA33-6", "display": "Yes"}
NO = {"system": LOINC, "code": "LA32-8", "display": "No"}
SDOH_CORE = (
    ("food", ("food-worry", "food-did-not-last")),
    ("housing", ("housing-stayed-outside", "housing-worried-losing", "utilities-unable")),
    ("transportation-group", ("transportation",)),
    ("safety", ("safety-unsafe", "safety-hurt")),
)


def answer(**value: Any) -> list[dict[str, Any]]:
    return [{f"value{k[0].upper()}{k[1:]}": v for k, v in value.items()}]


def question(link_id: str, **value: Any) -> dict[str, Any]:
    return {"linkId": link_id, "answer": answer(**value)}


def group(link_id: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"linkId": link_id, "item": list(items)}


def response(questionnaire: str, patient: str, items: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{BASE}/Questionnaire/{questionnaire}",
        "status": "completed",
        "subject": {"reference": patient},
        "authored": "2026-11-30T10:00:00Z",
        **extra,
        "item": items,
    }


def engagement(patient: str) -> dict[str, Any]:
    return response(
        "engagement-sheet",
        patient,
        [
            group(
                "about-me",
                question("name-to-use", string="Dee"),
                question(
                    "pronouns",
                    coding={"system": LOINC, "code": "LA29520-6"},
                ),
                question("gender-identity", string="Two-spirit"),
            ),
            group(
                "what-matters",
                question("what-matters-most", string="Keeping my apartment and seeing my kids"),
                question("success", string="Working again by summer"),
            ),
            group(
                "reach-me",
                {
                    "linkId": "contact-method",
                    "answer": [
                        {
                            "valueCoding": {
                                "system": f"{BASE}/CodeSystem/contact-preference",
                                "code": "text-message",
                            }
                        },
                        {
                            "valueCoding": {
                                "system": f"{BASE}/CodeSystem/contact-preference",
                                "code": "in-person",
                            }
                        },
                    ],
                },
                question("leave-message", boolean=False),
            ),
            group(
                "supports",
                question("has-supporter", boolean=True),
                group(
                    "supporter",
                    question("supporter-name", string="Ray"),
                    question(
                        "supporter-role",
                        coding={
                            "system": f"{BASE}/CodeSystem/care-team-role",
                            "code": "peer-support",
                        },
                    ),
                ),
            ),
            group(
                "what-has-been-hard",
                question("wants-to-share", boolean=True),
                question("hard-things", string="Losing my job last year"),
            ),
        ],
    )


def sdoh(positive: set[str] = frozenset(), optional: bool = False) -> dict[str, Any]:
    groups = [
        group(name, *(question(code, coding=YES if code in positive else NO) for code in codes))
        for name, codes in SDOH_CORE
    ]
    if optional:
        groups.append(
            group(
                "optional",
                question("urgent-need", coding=NO),
                question("would-like-help", coding=YES),
            )
        )
    return group("sdoh", *groups)


def assessment(patient: str, positive: set[str] = frozenset(), **extra: Any) -> dict[str, Any]:
    return response(
        "comprehensive-assessment",
        patient,
        [
            group(
                "physical-health",
                question("overall-health", string="Fair"),
                question("has-pcp", boolean=True),
                question("pcp-name", string="Dr. Osei"),
                question("recent-hospital", integer=2),
            ),
            group(
                "medications",
                question("takes-medications", boolean=True),
                question("medication-list", string="lisinopril, metformin"),
                {
                    "linkId": "medication-trouble",
                    "answer": [{"valueString": "Cost"}, {"valueString": "Side effects"}],
                },
            ),
            group(
                "goals",
                group("goal", question("goal-text", string="Walk to church without stopping")),
                group("goal", question("goal-text", string="Cook for my grandkids on Sundays")),
            ),
            sdoh(positive, optional=bool(positive)),
        ],
        **extra,
    )


def satisfaction(patient: str, communication: str) -> dict[str, Any]:
    return response(
        "contact-satisfaction",
        patient,
        [
            question("contact", reference={"reference": communication}),
            question("overall", integer=5),
            question("helpful", string="Very helpful"),
            question("listened", string="Yes"),
            question("next-steps", boolean=True),
        ],
    )


def clone(resource: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(resource)
