"""The index database: models, engine and migrations."""
