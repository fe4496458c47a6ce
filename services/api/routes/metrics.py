"""GET /metrics: the node in Prometheus text format, every DICOM listener replica included.

The API and the DICOM listeners are separate processes (and several listeners may run), so the listeners'
counters travel through the index: each ``pacs scp`` publishes its counters in its heartbeat row every
``heartbeat_interval_seconds`` (services.scp.audit_trail.AssociationTrail.metrics), and this route turns the rows
of the live replicas into metric families at scrape time, one series per replica (label ``replica``, the
heartbeat's ``service@host:pid``; a restarted replica is a new series, which Prometheus' ``rate()`` handles).
The queue depth and index counts are read when scraped. No label carries patient data; AE titles never appear
either (rejection reasons and service names only).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from services.api.dependencies import get_runtime
from shared.db.models import DeadLetter, Instance, Job, ServiceHeartbeat, Study
from shared.events import utc_now
from shared.runtime import Runtime
from shared.storage import StorageError

router = APIRouter(tags=["metrics"])

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=labels)


class NodeCollector(Collector):
    """Reads the index (heartbeats, counts) and the pending ledger once per scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pacs_index_up", "1 when the index database answered this scrape")
        try:
            with self.runtime.sessions() as session:
                beats = list(session.scalars(select(ServiceHeartbeat)))
                instances = session.scalar(select(func.count()).select_from(Instance)) or 0
                studies = session.scalar(select(func.count()).select_from(Study)) or 0
                stored_bytes = session.scalar(select(func.coalesce(func.sum(Instance.size), 0))) or 0
                dead_letters = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
                jobs = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            yield from self._pending()
            return
        up.add_metric([], 1)
        yield up
        index = GaugeMetricFamily("pacs_index_instances", "Distinct SOP instances in the index")
        index.add_metric([], instances)
        yield index
        study_count = GaugeMetricFamily("pacs_index_studies", "Studies in the index")
        study_count.add_metric([], studies)
        yield study_count
        size = GaugeMetricFamily("pacs_index_bytes", "Bytes of the indexed objects")
        size.add_metric([], int(stored_bytes))
        yield size
        dead = GaugeMetricFamily("pacs_queue_dead_letters", "Instances that could not be indexed (dead letters)")
        dead.add_metric([], dead_letters)
        yield dead
        job_states = GaugeMetricFamily("pacs_jobs", "C-MOVE and REST-send jobs, by state", labels=["state"])
        for state in JOB_STATES:
            job_states.add_metric([state], jobs.get(state, 0))
        yield job_states
        yield from self._pending()
        yield from self._services(beats)

    def _pending(self) -> Iterator[Metric]:
        store_up = GaugeMetricFamily("pacs_object_store_up", "1 when the object store answered this scrape")
        try:
            count = self.runtime.ledger.count()
        except StorageError:
            store_up.add_metric([], 0)
            yield store_up  # the pending count is unknown while the object store is unreachable
            return
        store_up.add_metric([], 1)
        yield store_up
        pending = GaugeMetricFamily("pacs_queue_pending", "Instances acknowledged but not yet indexed")
        pending.add_metric([], count)
        yield pending

    def _services(self, beats: list[ServiceHeartbeat]) -> Iterator[Metric]:
        stale_after = timedelta(seconds=3 * self.runtime.settings.heartbeat_interval_seconds)
        now = utc_now()
        up = GaugeMetricFamily("pacs_service_up", "1 while a service's heartbeat is fresh, 0 once it is late",
                               labels=["service", "replica"])
        live_scps: list[tuple[str, dict[str, Any]]] = []
        for beat in sorted(beats, key=lambda b: b.instance_name):
            age = now - beat.last_seen
            if age > stale_after * 10:
                continue  # long gone
            alive = age <= stale_after
            up.add_metric([beat.service, beat.instance_name], 1 if alive else 0)
            if beat.service == "scp" and alive:
                live_scps.append((beat.instance_name, beat.details or {}))
        yield up
        yield from scp_metrics(live_scps)


def scp_metrics(replicas: list[tuple[str, dict[str, Any]]]) -> Iterator[Metric]:
    """Metric families from the heartbeat details of the live DICOM listeners."""
    current = GaugeMetricFamily("pacs_scp_associations_current", "Associations open now", labels=["replica"])
    associations = _counter("pacs_scp_associations", "Associations accepted, and ended by release or abort",
                            ["replica", "event"])
    rejected = _counter("pacs_scp_associations_rejected", "Associations refused with A-ASSOCIATE-RJ, by reason",
                        ["replica", "reason"])
    refused = _counter("pacs_scp_requests_refused", "Requests refused with 0x0124 (not authorized), by service",
                       ["replica", "service"])
    operations = _counter("pacs_scp_operations", "DIMSE operations answered, by operation and outcome",
                          ["replica", "operation", "outcome"])
    stored = _counter("pacs_scp_instances_stored", "New instances made durable (re-sent identical ones excluded)",
                      ["replica"])
    store_failed = _counter("pacs_scp_store_failures", "C-STORE requests answered with a failure status",
                            ["replica"])
    stored_bytes = _counter("pacs_scp_stored_bytes", "Bytes of the new objects written", ["replica"])
    received = _counter("pacs_scp_received_bytes", "Data set bytes received in DIMSE messages", ["replica"])
    sent = _counter("pacs_scp_sent_bytes", "Data set bytes sent in DIMSE messages", ["replica"])
    backlog = GaugeMetricFamily("pacs_scp_publish_backlog", "Indexing events waiting to be handed to the queue",
                                labels=["replica"])
    audit_dropped = _counter("pacs_scp_audit_dropped", "Audit rows dropped (database down or buffer full)",
                             ["replica"])
    tls_failures = _counter("pacs_scp_tls_handshake_failures", "TLS handshakes that failed on the DICOM TLS port",
                            ["replica"])
    latency = HistogramMetricFamily("pacs_scp_store_latency_seconds",
                                    "C-STORE: request received to response sent", labels=["replica"])
    for replica, details in replicas:
        metrics: dict[str, Any] = details.get("metrics") or {}
        labels = [replica]
        current.add_metric(labels, metrics.get("associations_current", details.get("associations", 0)))
        for event, value in sorted((metrics.get("associations") or {}).items()):
            associations.add_metric([replica, event], value)
        for reason, value in sorted((details.get("rejected_associations") or {}).items()):
            rejected.add_metric([replica, reason], value)
        for service, value in sorted((details.get("refused_requests") or {}).items()):
            refused.add_metric([replica, service], value)
        for key, value in sorted((metrics.get("operations") or {}).items()):
            operation, _, outcome = key.partition(":")
            operations.add_metric([replica, operation, outcome], value)
        stored.add_metric(labels, details.get("stored", 0))
        store_failed.add_metric(labels, details.get("failed", 0))
        stored_bytes.add_metric(labels, details.get("bytes", 0))
        received.add_metric(labels, metrics.get("bytes_received", 0))
        sent.add_metric(labels, metrics.get("bytes_sent", 0))
        backlog.add_metric(labels, details.get("publish_backlog", 0))
        audit_dropped.add_metric(labels, details.get("audit_dropped", 0))
        tls_failures.add_metric(labels, details.get("tls_handshake_failures", 0))
        histogram = metrics.get("store_latency_seconds")
        if histogram:
            cumulative, buckets = 0, []
            for bound, count in zip([*histogram["buckets"], float("inf")], histogram["counts"]):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            latency.add_metric(labels, buckets, histogram["sum"])
    yield from (current, associations, rejected, refused, operations, stored, store_failed, stored_bytes,
                received, sent, backlog, audit_dropped, tls_failures, latency)


@router.get("/metrics", summary="Prometheus metrics of the node (every DICOM listener replica included)",
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(runtime: Runtime = Depends(get_runtime)) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(runtime))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
