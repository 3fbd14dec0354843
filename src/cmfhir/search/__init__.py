"""The search language, pure: a query string parsed into a typed `SearchRequest`."""

from cmfhir.search.model import Criterion, SearchRequest, SortKey
from cmfhir.search.parse import parse_instant, parse_search, selection_query, split_escaped

__all__ = [
    "Criterion",
    "SearchRequest",
    "SortKey",
    "parse_instant",
    "parse_search",
    "selection_query",
    "split_escaped",
]
