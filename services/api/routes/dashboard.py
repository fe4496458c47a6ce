"""The dashboard: GET / (the page) and its two static files under /dashboard/.

These routes are open (services.api.auth.OPEN_PATHS): they serve the same fixed bytes to everyone and hold no
data. The page's script asks the API for everything it shows, with the bearer token the user gives it, so each
panel sees exactly what that token may see. They are left out of the OpenAPI description (not API routes).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from services.api.dashboard import ASSETS, asset

router = APIRouter(include_in_schema=False)

# Nothing is loaded from anywhere but the node itself; no inline script or style can run.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
STATIC_PATHS = ("/dashboard/dashboard.css", "/dashboard/dashboard.js")


def _serve(name: str) -> Response:
    return Response(asset(name), media_type=ASSETS[name], headers=SECURITY_HEADERS)


@router.get("/")
def page() -> Response:
    return _serve("index.html")


@router.get("/dashboard/dashboard.css")
def stylesheet() -> Response:
    return _serve("dashboard.css")


@router.get("/dashboard/dashboard.js")
def script() -> Response:
    return _serve("dashboard.js")
