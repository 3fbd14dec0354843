"""What a Subscription write is checked for (the backport profile as cmfhir delivers it, the
endpoint policy against SSRF) and what a read never shows (channel headers); the topics in
/metadata and as R4B SubscriptionTopic resources."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.subscriptions.conftest import BACKPORT, TOPICS, subscription

R4B = "application/fhir+json; fhirVersion=4.3"


def _refused(client: httpx.Client, body: dict[str, Any], expression: str) -> str:
    before = client.get("/Subscription", params={"_summary": "count"}).json()["total"]
    response = client.post("/Subscription", json=body)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [expression]
    after = client.get("/Subscription", params={"_summary": "count"}).json()["total"]
    assert after == before  # nothing stored
    return str(issue["diagnostics"])


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = {**body, "channel": dict(body["channel"])}
    if path == "criteria":
        out["criteria"] = value
    else:
        out["channel"][path] = value
    return out


HTTPS = "https://hooks.example.org/notify"


@pytest.mark.parametrize(
    ("body", "expression", "says"),
    [
        pytest.param(
            subscription("no-such-topic", HTTPS),
            "Subscription.criteria",
            "canonical URL of a topic",
            id="unknown-topic",
        ),
        pytest.param(
            subscription("care-gap", HTTPS, filters=("DetectedIssue?author=Practitioner/1",)),
            "Subscription.criteria.extension[0]",
            "'author' is not a filter",
            id="filter-not-of-the-topic",
        ),
        pytest.param(
            subscription("care-gap", HTTPS, filters=("Encounter?patient=Patient/1",)),
            "Subscription.criteria.extension[0]",
            "for a type this topic filters",
            id="filter-of-another-type",
        ),
        pytest.param(
            subscription("care-gap", HTTPS, channel="email"),
            "Subscription.channel.type",
            "must be one of rest-hook, websocket",
            id="email-channel",
        ),
        pytest.param(
            subscription("care-gap", "http://hooks.example.org/notify"),
            "Subscription.channel.endpoint",
            "must use https",
            id="plain-http",
        ),
        pytest.param(
            subscription("care-gap", "https://127.0.0.1:9/notify"),
            "Subscription.channel.endpoint",
            "Loopback endpoints are accepted in development only",
            id="loopback-outside-development",
        ),
        pytest.param(
            subscription("care-gap", "https://10.0.0.7/notify"),
            "Subscription.channel.endpoint",
            "private or link-local",
            id="private-address",
        ),
        pytest.param(
            subscription("care-gap", "https://169.254.169.254/latest/meta-data"),
            "Subscription.channel.endpoint",
            "private or link-local",
            id="cloud-metadata-address",
        ),
        pytest.param(
            subscription("care-gap", None),
            "Subscription.channel.endpoint",
            "needs channel.endpoint",
            id="rest-hook-without-endpoint",
        ),
        pytest.param(
            _with(subscription("care-gap", HTTPS), "payload", "application/xml"),
            "Subscription.channel.payload",
            "application/fhir+json",
            id="xml-payload",
        ),
    ],
)
def test_refused(client: httpx.Client, body: dict[str, Any], expression: str, says: str) -> None:
    assert says in _refused(client, body, expression)


def test_unknown_payload_content_is_refused(client: httpx.Client) -> None:
    body = subscription("care-gap", HTTPS, status="off")
    body["channel"]["_payload"]["extension"][0]["valueCode"] = "everything"
    # Core validation knows the backport extension's value only as a code; cmfhir's check
    # names the allowed contents.
    response = client.post("/Subscription", json=body)
    assert response.status_code == 422
    assert "empty, id-only, full-resource" in response.text


def test_headers_are_never_shown_and_the_client_only_requests(client: httpx.Client) -> None:
    body = subscription(
        "care-gap",
        HTTPS,
        filters=("DetectedIssue?gap-status=open-gap",),
        headers=("Authorization: Bearer do-not-echo",),
        status="active",
    )
    created = client.post("/Subscription", json=body)
    assert created.status_code == 201, created.text
    assert "do-not-echo" not in created.text
    read = client.get(f"/Subscription/{created.json()['id']}")
    assert "do-not-echo" not in read.text
    assert "header" not in read.json()["channel"]
    # A client asks; the server activates after the handshake.
    assert read.json()["status"] == "requested"
    listed = client.get("/Subscription", params={"_id": created.json()["id"]})
    assert "do-not-echo" not in listed.text
    history = client.get(f"/Subscription/{created.json()['id']}/_history")
    assert "do-not-echo" not in history.text
    # Stop it: nothing is to be sent to that host from the test server.
    stopped = {**read.json(), "status": "off"}
    assert client.put(f"/Subscription/{stopped['id']}", json=stopped).status_code == 200


def test_a_sealed_value_copied_to_another_subscription_opens_to_nothing(
    client: httpx.Client,
) -> None:
    first = client.post(
        "/Subscription",
        json=subscription("care-gap", HTTPS, headers=("X-Secret: 1",), status="off"),
    ).json()
    copy = subscription("care-gap", HTTPS, status="off")
    copy["channel"]["extension"] = first["channel"]["extension"]
    second = client.post("/Subscription", json=copy).json()
    # The server re-seals every client write: the copy does not carry the first's seal.
    assert second["channel"]["extension"] != first["channel"]["extension"]


def test_metadata_lists_the_topics(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    listed = {
        e["valueCanonical"]
        for e in entry["extension"]
        if e["url"].endswith("capabilitystatement-subscriptiontopic-canonical")
    }
    assert listed == {
        TOPICS + t
        for t in (
            "care-gap",
            "encounter-admission-discharge",
            "questionnaire-response-completed",
            "communication-recorded",
        )
    }
    assert BACKPORT + "backport-subscription" in entry["supportedProfile"]
    operations = {o["name"] for o in entry["operation"]}
    assert {"status", "events", "get-ws-binding-token"} <= operations


def test_topics_are_served_to_r4b_clients(client: httpx.Client) -> None:
    found = client.get("/SubscriptionTopic/care-gap", headers={"Accept": R4B})
    assert found.status_code == 200, found.text
    topic = found.json()
    assert topic["url"] == TOPICS + "care-gap"
    assert {f["filterParameter"] for f in topic["canFilterBy"]} == {
        "patient",
        "rule",
        "gap-status",
        "care-manager",
    }
    # R4 has no SubscriptionTopic: the canonical in /metadata is what R4 clients get.
    assert client.get("/SubscriptionTopic/care-gap").status_code in (400, 404)
