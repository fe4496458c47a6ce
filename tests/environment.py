"""What a test needs of the machine: skipped where it is missing on a developer's machine, a failure in CI
(CI=true), where the machine is known to have it and a skip would hide a broken feature."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"in CI this must be available: {reason}")
    pytest.skip(reason)
