"""Care-management performance reports, computed in SQL over the indexed data."""
