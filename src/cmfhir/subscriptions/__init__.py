"""Topic-based subscriptions (R5 Backport IG): notifications delivered from the outbox."""
