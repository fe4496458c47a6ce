"""The dashboard's files: shipped as package data, served by the routes the access rules leave open (and only
those), self-contained (nothing from the internet, no inline script), and rendering text only."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from services.api.auth import OPEN_PATHS, required_role
from services.api.dashboard import ASSETS, asset
from services.api.routes.dashboard import STATIC_PATHS, router

REPO = Path(__file__).resolve().parents[3]
FOLDER = REPO / "services" / "api" / "dashboard"


def test_every_file_of_the_dashboard_is_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["services.api.dashboard"]
    files = [path.name for path in FOLDER.iterdir() if path.is_file() and path.suffix != ".py"]
    assert sorted(files) == sorted(ASSETS)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
        assert asset(name) == (FOLDER / name).read_bytes()


def test_the_page_shell_and_its_files_are_open_and_nothing_else_of_the_dashboard() -> None:
    served = {route.path for route in router.routes}  # type: ignore[attr-defined]
    assert served == {"/", *STATIC_PATHS}
    assert served <= OPEN_PATHS
    for path in served:
        assert required_role("GET", path) is None
    assert required_role("GET", "/dashboard/other.js") is not None  # only the listed files
    assert required_role("POST", "/") is not None
    assert required_role("GET", "/api/studies") is not None and required_role("GET", "/api/status") is not None


def test_the_page_loads_only_its_own_files() -> None:
    html = asset("index.html").decode()
    references = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert set(references) - {"data:,"} == set(STATIC_PATHS)
    assert "<script>" not in html and " style=" not in html and "on" + "click=" not in html  # CSP: no inline code
    for name in ASSETS:
        text = asset(name).decode()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name  # nothing from the internet


def test_the_script_renders_text_only() -> None:
    script = asset("dashboard.js").decode()
    for sink in (".innerHTML", ".outerHTML", ".insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "sessionStorage" in script and "localStorage" not in script  # the token lives in the tab only
