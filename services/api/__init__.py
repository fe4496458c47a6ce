"""The HTTP API (FastAPI): health, readiness, status and instance metadata."""
