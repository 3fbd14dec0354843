"""Which interaction a method and URL name, exactly as the REST API routes them
(https://hl7.org/fhir/R4B/http.html): the one parser Bundle entries go through, so that an
entry gets the answer the same method and URL get over HTTP (404 for no such endpoint, 405
for a method the endpoint does not serve) and never acts on a shorter URL than it named.

`ROUTES` mirrors the endpoints of `routes/fhir.py` in the order they are registered, and is
matched the way the router matches them: the first route whose path and method both match
wins; a path that matches only with other methods is 405; no path at all is 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from cmfhir.errors import BadRequest, MethodNotAllowed, NotFound

__all__ = ["ROUTES", "Target", "parse_request_url"]

# (path pattern, method -> interaction). `{type}`, `{id}`, `{vid}` match one non-empty
# segment; anything else is literal.
ROUTES: tuple[tuple[tuple[str, ...], dict[str, str]], ...] = (
    (("metadata",), {"GET": "capabilities"}),
    ((), {"POST": "transaction", "GET": "search-system"}),
    (("_search",), {"POST": "search-system"}),
    (("_history",), {"GET": "history-system"}),
    (("{type}",), {"GET": "search-type"}),
    (("{type}", "_search"), {"POST": "search-type"}),
    (("{type}", "_history"), {"GET": "history-type"}),
    (
        ("{type}",),
        {"POST": "create", "PUT": "update-conditional", "DELETE": "delete-conditional"},
    ),
    (("{type}", "{id}"), {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}),
    (("{type}", "{id}", "_history"), {"GET": "history-instance"}),
    (("Patient", "{id}", "{type}"), {"GET": "search-compartment"}),
    (("{type}", "{id}", "_history", "{vid}"), {"GET": "vread"}),
)


@dataclass(frozen=True, slots=True)
class Target:
    """What a request URL names. For `search-compartment`, `id` is the Patient's and
    `resource_type` the type searched in its compartment."""

    interaction: str
    resource_type: str | None = None
    id: str | None = None
    version: str | None = None
    query: str | None = None  # the query string as sent (not decoded)


# A route as matched: (literal segments, named segments, method -> interaction), the
# segments as (position, text).
_Compiled = tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...], dict[str, str]]


def _compile(
    routes: tuple[tuple[tuple[str, ...], dict[str, str]], ...],
) -> dict[int, list[_Compiled]]:
    """ROUTES by number of segments, in order, each as (literal segments, named segments,
    methods): what a request's path is matched against (a parse per request)."""
    compiled: dict[int, list[_Compiled]] = {}
    for pattern, methods in routes:
        literals = tuple((n, part) for n, part in enumerate(pattern) if not part.startswith("{"))
        names = tuple((n, part[1:-1]) for n, part in enumerate(pattern) if part.startswith("{"))
        compiled.setdefault(len(pattern), []).append((literals, names, methods))
    return compiled


_BY_LENGTH = _compile(ROUTES)


def _path(url: str, base: str) -> tuple[str, str | None]:
    """The path below the base and the query string of a relative URL, or of an absolute
    one on this server."""
    if ":" not in url and "#" not in url and not url.startswith("//"):
        # A plain relative URL (every request's own path): nothing for urlsplit to find.
        path, mark, query = url.partition("?")
        return path, (query if mark else None)
    if urlsplit(url).scheme:
        root = base.rstrip("/")
        if url != root and not url.startswith((root + "/", root + "?")):
            raise BadRequest(f"'{url}' is not a URL on this server ({root})")
        url = url[len(root) :]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or parts.fragment:
        raise BadRequest(f"'{url}' is not a request URL (Type/id?parameters)")
    return parts.path, (parts.query if "?" in url else None)


def parse_request_url(method: str, url: str, base: str) -> Target:
    """The interaction `method url` names, or the error the REST API answers it with.

    HEAD is read as GET (a Bundle may carry it). A trailing slash is dropped, as the REST API
    redirects `Patient/1/` to `Patient/1`; the path is percent-decoded before it is split,
    as the HTTP server does.
    """
    path, query = _path(url, base)
    path = path.removeprefix("/")
    if "%" in path:
        path = unquote(path)
    if path.endswith("/"):
        path = path[:-1]
    segments = path.split("/") if path else []
    verb = "GET" if method == "HEAD" else method
    allowed: set[str] = set()
    candidates = () if "" in segments else _BY_LENGTH.get(len(segments), ())
    for literals, names, methods in candidates:
        if any(segments[n] != literal for n, literal in literals):
            continue
        values = {name: segments[n] for n, name in names}
        interaction = methods.get(verb)
        if interaction is None:
            allowed.update(methods)
            continue
        return Target(
            interaction,
            resource_type=values.get("type"),
            id=values.get("id"),
            version=values.get("vid"),
            query=query,
        )
    shown = "/" + path
    if allowed:
        raise MethodNotAllowed(
            f"{method} is not allowed on {shown} (it takes {', '.join(sorted(allowed))})"
        )
    raise NotFound(f"No such endpoint: {method} {shown}")
