"""The `cmfhir` subcommands of each feature (cli.py registers them)."""
