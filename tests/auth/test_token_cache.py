"""Verified access tokens are kept by their exact text (routes/bearer.py,
auth/tokens.VerifiedTokens), and a kept token is still refused once revoked or expired."""

from __future__ import annotations

import time

import httpx
from tests.auth.conftest import Smart

from cmfhir.auth.principal import Principal
from cmfhir.auth.tokens import Verified, VerifiedTokens

_WHO = Principal("system", client_id="c", scopes=("system/*.rs",))


def test_a_revoked_token_is_refused_after_it_was_cached(smart: Smart) -> None:
    system = smart.system()
    created = system.post("/Patient", json={"resourceType": "Patient", "active": True})
    assert created.status_code == 201, created.text
    member = created.json()["id"]
    reader = smart.as_token("patient/*.rs", patient=member)
    # Verified on the first use, taken from the cache on the next ones.
    for _ in range(3):
        assert reader.get(f"/Patient/{member}").status_code == 200
    # Another text is another token: a cached one does not vouch for a tampered copy.
    tampered = smart.bearer(reader.token[:-2] + ("AA" if reader.token[-2:] != "AA" else "BB"))
    assert tampered.get(f"/Patient/{member}").status_code == 401

    assert (
        httpx.post(f"{smart.origin}/auth/revoke", data={"token": reader.token}).status_code == 200
    )
    deadline = time.monotonic() + 10
    while (answer := reader.get(f"/Patient/{member}")).status_code != 401:
        assert answer.status_code == 200, answer.text
        assert time.monotonic() < deadline, "a revoked token still works"
        time.sleep(0.2)
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert reader.get(f"/Patient/{member}").status_code == 401
    # The other token (the backend client's) is untouched.
    assert system.get(f"/Patient/{member}").status_code == 200


def test_an_entry_lasts_until_the_token_expires() -> None:
    cache = VerifiedTokens()
    now = time.time()
    cache.put("live", "aud", "origin", {"exp": now + 600, "jti": "a"}, _WHO)
    cache.put("expired", "aud", "origin", {"exp": now - 1, "jti": "b"}, _WHO)
    cache.put("ending", "aud", "origin", {"exp": now + 600, "jti": "c"}, _WHO)
    kept = cache.get("live", "aud", "origin")
    assert kept is not None and kept.principal == _WHO and kept.jti == "a"
    assert cache.get("expired", "aud", "origin") is None
    # Verified for one audience and origin only.
    assert cache.get("live", "other", "origin") is None
    assert cache.get("live", "aud", "elsewhere") is None
    # Past its expiry (the clock moved on), an entry is gone.
    cache._entries[("ending", "aud", "origin")] = Verified(_WHO, "c", now - 1)
    assert cache.get("ending", "aud", "origin") is None
    assert len(cache) == 1


def test_an_entry_is_verified_again_after_reverify_s() -> None:
    cache = VerifiedTokens()
    now = time.time()
    kept = cache.put("long", "aud", "origin", {"exp": now + 86_400, "jti": "a"}, _WHO)
    assert kept.until <= now + VerifiedTokens.REVERIFY_S + 1


def test_the_cache_stays_bounded() -> None:
    cache = VerifiedTokens()
    cache.MAX_ENTRIES = 10
    exp = time.time() + 600
    for n in range(25):
        cache.put(f"t{n}", "aud", "origin", {"exp": exp, "jti": str(n)}, _WHO)
        assert len(cache) <= 10
    assert cache.get("t24", "aud", "origin") is not None
