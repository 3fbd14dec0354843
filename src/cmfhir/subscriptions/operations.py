"""The backport IG's operations on Subscription: `$status`
(http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status),
`$events` (.../backport-subscription-events) and `$get-ws-binding-token`
(.../backport-subscription-get-ws-binding-token)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import BadRequest, Gone, NotFound
from cmfhir.interactions import read
from cmfhir.interactions.context import FhirContext, Result, instant
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.store import SubscriptionRows
from cmfhir.store.subscriptions import DeliveryState
from cmfhir.subscriptions.events import foci
from cmfhir.subscriptions.model import CONTENTS
from cmfhir.subscriptions.notifications import notification_bundle, status_parameters

if TYPE_CHECKING:
    from cmfhir.subscriptions.feature import Loaded, SubscriptionFeature

__all__ = ["implementations", "websocket_url"]

MAX_REPLAY = 1000
WEBSOCKET_PATH = "/ws/subscriptions"


def websocket_url(base: str | None) -> str:
    """Where the websocket endpoint is: beside the FHIR base (relative when no base URL is
    configured)."""
    if not base:
        return WEBSOCKET_PATH
    root = base.rstrip("/").removesuffix("/fhir")
    return root.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + WEBSOCKET_PATH


def _number(call: OperationCall, name: str) -> int | None:
    value = call.value(name)
    if value is None:
        return None
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1:
        raise BadRequest(f"{name} must be an event number (1 or more)", expression=[name])
    return number


def implementations(
    feature: SubscriptionFeature,
) -> dict[str, Callable[[Any, Any], Awaitable[Any]]]:
    async def load(ctx: FhirContext, id: str) -> tuple[Loaded, DeliveryState | None]:
        # As the caller: what it may not read, it may not ask about (404 / 410 as a read).
        await read(ctx, "Subscription", id)
        async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
            loaded = await feature.load(repo, id)
            state = await SubscriptionRows(repo.conn).state(id)
        if loaded is None:
            raise Gone(f"Subscription/{id} was deleted")
        return loaded, state

    def status_of(
        loaded: Loaded, state: DeliveryState | None, kind: str, events: list[Any] | None = None
    ) -> dict[str, Any]:
        return status_parameters(
            base=feature.base,
            subscription_id=loaded.config.id,
            topic=loaded.config.topic,
            status=state.status if state else loaded.config.status,
            kind=kind,
            events_since_start=state.events_since_start if state else 0,
            events=events or [],
            error=state.last_error if state else None,
        )

    async def status(ctx: FhirContext, call: OperationCall) -> Result:
        if call.id is not None:
            ids = [call.id]
        else:
            ids = [str(e.get("valueString") or e.get("valueId") or "") for e in _all(call, "id")]
            if not ids:
                async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
                    ids = [s.subscription_id for s in await SubscriptionRows(repo.conn).states()]
        wanted = {str(e.get("valueCode") or e.get("valueString")) for e in _all(call, "status")}
        entries = []
        for id in ids:
            try:
                loaded, state = await load(ctx, id)
            except (NotFound, Gone):
                if call.id is not None:
                    raise
                continue
            parameters = status_of(loaded, state, "query-status")
            if wanted and (state.status if state else loaded.config.status) not in wanted:
                continue
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{parameters['id']}",
                    "resource": parameters,
                    "search": {"mode": "match"},
                }
            )
        bundle = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": "searchset",
            "total": len(entries),
            "entry": entries,
        }
        return Result(200, bundle)

    async def events(ctx: FhirContext, call: OperationCall) -> Result:
        assert call.id is not None
        loaded, state = await load(ctx, call.id)
        content = call.value("content")
        if content is not None and content not in CONTENTS:
            raise BadRequest(
                f"content must be one of {', '.join(CONTENTS)}", expression=["content"]
            )
        since = _number(call, "eventsSinceNumber")
        until = _number(call, "eventsUntilNumber")
        latest = state.events_since_start if state else 0
        if until is None or until > latest:
            until = latest
        if since is None:
            since = max(1, until - MAX_REPLAY + 1)
        if until - since + 1 > MAX_REPLAY:
            raise BadRequest(
                f"$events replays at most {MAX_REPLAY} events at a time",
                expression=["eventsUntilNumber"],
            )
        found = (
            await foci(ctx, loaded, since, until, MAX_REPLAY, content or "")
            if since <= until
            else []
        )
        parameters = status_of(loaded, state, "query-event", found)
        bundle = notification_bundle(
            parameters,
            base=feature.base,
            subscription_id=loaded.config.id,
            now=datetime.now(UTC),
            events=found,
            content=content or loaded.config.content,
        )
        return Result(200, bundle)

    async def get_ws_binding_token(ctx: FhirContext, call: OperationCall) -> Result:
        assert call.id is not None
        loaded, _ = await load(ctx, call.id)
        if loaded.config.channel != "websocket":
            raise BadRequest(
                f"Subscription/{call.id} is not a websocket Subscription",
                expression=["Subscription.channel.type"],
            )
        token = feature.sealer.binding_token(call.id)
        expires = datetime.now(UTC) + timedelta(seconds=feature.token_ttl_s)
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "token", "valueString": token},
                {"name": "expiration", "valueDateTime": instant(expires)},
                {"name": "subscription", "valueString": f"Subscription/{call.id}"},
                {"name": "websocket-url", "valueUrl": websocket_url(feature.base)},
            ],
        }
        return Result(200, parameters)

    return {
        "status": status,
        "events": events,
        "get-ws-binding-token": get_ws_binding_token,
    }


def _all(call: OperationCall, name: str) -> list[dict[str, Any]]:
    return [p for p in call.parameters.get("parameter", []) if p.get("name") == name]
