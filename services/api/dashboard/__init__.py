"""The dashboard's static files (index.html, dashboard.css, dashboard.js), shipped as package data.

The page is a shell that holds no data: its script reads everything from the authenticated API
(/api/status, /api/audit, /api/studies, /api/modalities) and renders it as text, never as HTML.
"""

from __future__ import annotations

from importlib import resources

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}


def asset(name: str) -> bytes:
    """The bytes of one of ASSETS (a KeyError for any other name: no path is ever built from a request)."""
    ASSETS[name]
    return resources.files(__package__).joinpath(name).read_bytes()
