"""Build the object store that a storage URL names."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.settings import Settings
from shared.storage.base import ObjectStore


def open_object_store(settings: Settings) -> ObjectStore:
    url = settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from shared.storage.filesystem import FilesystemObjectStore

        return FilesystemObjectStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from shared.storage.s3 import S3ObjectStore

        if not parsed.netloc:
            raise ValueError("PACS_STORAGE_URL s3://bucket needs a bucket name")
        if not settings.s3_endpoint:
            raise ValueError("PACS_STORAGE_URL s3://… needs PACS_S3_ENDPOINT")
        return S3ObjectStore(
            bucket=parsed.netloc,
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key or "",
            secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else "",
            region=settings.s3_region,
            timeout_seconds=settings.s3_timeout_seconds,
        )
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r} (use file:// or s3://)")
