"""Who is asking: principals, SMART scopes and tokens (pure where possible)."""
