"""Storage on PostgreSQL: the only package that imports SQLAlchemy or asyncpg."""

from cmfhir.store.database import Database, open_database
from cmfhir.store.integrity import ReferencePolicy
from cmfhir.store.oauth import OAuthStore
from cmfhir.store.outbox import START, Event, EventPosition
from cmfhir.store.records import Current, Method, NewVersion, StoredVersion
from cmfhir.store.repository import HistoryPage, Repository, SearchPage
from cmfhir.store.searcher import Searcher, Searches
from cmfhir.store.store import Store
from cmfhir.store.subscriptions import SubscriptionRows

__all__ = [
    "START",
    "Current",
    "Database",
    "Event",
    "EventPosition",
    "HistoryPage",
    "Method",
    "NewVersion",
    "OAuthStore",
    "ReferencePolicy",
    "Repository",
    "SearchPage",
    "Searcher",
    "Searches",
    "Store",
    "StoredVersion",
    "SubscriptionRows",
    "open_database",
]
