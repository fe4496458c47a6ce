"""Send pending webhook deliveries (shared/webhooks.py): claim, POST, record the answer, schedule retries."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.routing_models import Webhook, WebhookDelivery
from shared.events import utc_now
from shared.node_config import NodeConfig
from shared.routing import retry_delay_seconds
from shared.webhooks import SIGNATURE_HEADER, body_bytes, signature
from shared.version import VERSION

log = logging.getLogger(__name__)

CLAIM = 20  # claimed per pass: at 4 at a time and 10 s each, well within the lease
LEASE = timedelta(minutes=2)
TIMEOUT_SECONDS = 10.0
MAX_RETRY_SECONDS = 3600
CONCURRENT = 4


@dataclass(frozen=True)
class Claimed:
    pk: int
    url: str
    secret: str | None
    payload: dict[str, Any]
    event: str
    event_id: str


class WebhookSender:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._pool = ThreadPoolExecutor(max_workers=CONCURRENT, thread_name_prefix="webhook")
        self._client = httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False)

    def run_pass(self, config: NodeConfig) -> int:
        claimed = self._claim()
        results = list(self._pool.map(self._post, claimed))
        for item, (status, error) in zip(claimed, results):
            self._record(item, status, error, config)
        return len(claimed)

    def _claim(self) -> list[Claimed]:
        now = utc_now()
        with self._sessions.begin() as session:
            rows = session.execute(
                select(WebhookDelivery, Webhook.url, Webhook.secret)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now,
                       Webhook.enabled.is_(True),  # a disabled webhook's deliveries wait, without blocking others
                       (WebhookDelivery.claimed_until.is_(None)) | (WebhookDelivery.claimed_until < now))
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.pk).limit(CLAIM)
                .with_for_update(of=WebhookDelivery, skip_locked=True)).all()
            claimed = []
            for delivery, url, secret in rows:
                delivery.claimed_until = now + LEASE
                claimed.append(Claimed(delivery.pk, url, secret, dict(delivery.payload), delivery.event,
                                       delivery.event_id))
            return claimed

    def _post(self, item: Claimed) -> tuple[int | None, str]:
        body = body_bytes(item.payload)
        headers = {"Content-Type": "application/json", "User-Agent": f"pacs-node/{VERSION}",
                   "X-Pacs-Event": item.event, "X-Pacs-Event-Id": item.event_id, "X-Pacs-Delivery": str(item.pk)}
        if item.secret:
            headers[SIGNATURE_HEADER] = signature(item.secret, body)
        try:
            response = self._client.post(item.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, exc.__class__.__name__
        return response.status_code, "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

    def _record(self, item: Claimed, status: int | None, error: str, config: NodeConfig) -> None:
        now = utc_now()
        with self._sessions.begin() as session:
            delivery = session.get(WebhookDelivery, item.pk)
            if delivery is None:
                return  # its webhook was deleted meanwhile
            delivery.attempts += 1
            delivery.last_status, delivery.last_error, delivery.claimed_until = status, error, None
            if not error:
                delivery.state, delivery.delivered_at = "delivered", now
            elif delivery.attempts >= config.webhook_max_attempts:
                delivery.state = "failed"
                log.warning("webhook.delivery_failed delivery=%d attempts=%d error=%s", item.pk, delivery.attempts,
                            error)
            else:
                delay = retry_delay_seconds(config.webhook_retry_seconds, delivery.attempts, MAX_RETRY_SECONDS)
                delivery.next_attempt_at = now + timedelta(seconds=delay)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
