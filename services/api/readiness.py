"""Is each dependency reachable? Every check is bounded in time and names what is missing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from sqlalchemy import text

from shared.runtime import Runtime

CHECK_TIMEOUT_SECONDS = 5.0


def _database(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _object_store(runtime: Runtime) -> None:
    runtime.store.ping()


def _broker(runtime: Runtime) -> None:
    if runtime.settings.uses_embedded_broker:
        if not runtime.settings.embedded_queue_dir.is_dir():
            raise RuntimeError("embedded queue folder missing")
        return
    with runtime.celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=0, timeout=2)


CHECKS = {"database": _database, "object_store": _object_store, "broker": _broker}


def check_dependencies(runtime: Runtime) -> dict[str, str]:
    """Map each dependency to "ok" or a short reason it is not."""
    results: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="readiness")
    futures = {name: pool.submit(check, runtime) for name, check in CHECKS.items()}
    for name, future in futures.items():
        try:
            future.result(timeout=CHECK_TIMEOUT_SECONDS)
            results[name] = "ok"
        except FutureTimeout:
            results[name] = "timeout"
        except Exception as exc:
            results[name] = f"unreachable ({exc.__class__.__name__})"
    pool.shutdown(wait=False, cancel_futures=True)  # a hung check must not hold the answer
    return results
