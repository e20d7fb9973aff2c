"""What the daemon counts for its /metrics endpoint (Prometheus), in a registry of its own.

The doors call Metrics on their path (a counter increment, a histogram observation); what the
daemon's objects already know (open connections, queues, parse workers, the file-drop
backlog) is read from them at scrape time. No label ever carries patient data: doors, events
of the supported set, ACK codes, ERR codes, identity statuses and inbound folders (as
configured, never a file name) only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pamfr.hl7.events import SUPPORTED_EVENTS

if TYPE_CHECKING:
    from pamfr.feed.delivery import WebhookDelivery
    from pamfr.hl7.frame import Outcome
    from pamfr.ingest.filedrop import FileDropWatcher
    from pamfr.path.pipeline import AsyncReceiver
    from pamfr.transport.server import MLLPServer

# Seconds; an ACK slower than 30 s is already past most GAMs' timeout.
ACK_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def event_label(event: str) -> str:
    """MSH-9.2 as a label: the events pamfr accepts; anything a sender may invent is "other"
    (a label per invented value would grow the series without bound)."""
    if event in SUPPORTED_EVENTS:
        return event
    return "other" if event else "none"


class _Live(Collector):
    """Values read from the running objects at scrape time."""

    def __init__(self) -> None:
        self.gauges: list[tuple[str, str, Callable[[], dict[tuple[str, ...], float]], tuple]] = []
        self.counters: list[tuple[str, str, Callable[[], float]]] = []

    def collect(self) -> Iterator[Metric]:
        for name, doc, read, labels in self.gauges:
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for values, value in read().items():
                family.add_metric(list(values), value)
            yield family
        for name, doc, read in self.counters:
            yield CounterMetricFamily(name, doc, value=read())


class Metrics:
    """One daemon's metrics. Safe to call from the event loop and the writer thread.

    It implements the counters protocol of each room that counts, and the daemon gives it
    to each as that: transport.server.ServerCounters, path.pipeline.PathCounters,
    ingest.filedrop.FileDropCounters, feed.delivery.DeliveryCounters (tests/unit/
    test_counters.py holds it to them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "pamfr_messages",
            "Messages answered, by door, event (MSH-9.2), ACK code and whether the ACK carried "
            "a warning (ERR of severity W)",
            ["door", "event", "outcome", "warning"],
            registry=r,
        )
        self.errors = Counter(
            "pamfr_ack_errors",
            "ERR segments sent, by door, HL7 table 0357 code and severity (E error, W warning)",
            ["door", "code", "severity"],
            registry=r,
        )
        self.ack_latency = Histogram(
            "pamfr_ack_latency_seconds",
            "MLLP: seconds from a frame's arrival to its ACK written to the connection",
            buckets=ACK_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "pamfr_commit_batch_size",
            "Messages committed together in one transaction",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "pamfr_commit_duration_seconds",
            "Seconds one transaction of the writer took (look-ups, writes, commit)",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        self.refused = Counter(
            "pamfr_connections_refused",
            "MLLP connections closed at once, by reason (allow_list, max_connections)",
            ["reason"],
            registry=r,
        )
        self.files = Counter(
            "pamfr_filedrop_files",
            "Dropped files processed, by where they went (done, error)",
            ["result"],
            registry=r,
        )
        self.purged = Counter(
            "pamfr_raw_messages_purged",
            "Raw messages emptied by the daemon's retention pass ([retention] raw_messages_days)",
            registry=r,
        )
        self.purge_failures = Counter(
            "pamfr_purge_failures",
            "Retention passes that the database failed (the raw messages stay until the next)",
            registry=r,
        )
        self.webhook_delivered = Counter(
            "pamfr_webhook_delivered",
            "Events a webhook subscriber acknowledged (2xx), by subscriber name",
            ["subscriber"],
            registry=r,
        )
        self.webhook_failures = Counter(
            "pamfr_webhook_failures",
            "Failed webhook deliveries (error, timeout, non-2xx answer), by subscriber name",
            ["subscriber"],
            registry=r,
        )
        self.ready = Gauge(
            "pamfr_ready",
            "1 when the last readiness check passed (MLLP listener, database, parse workers)",
            registry=r,
        )
        self.last_message = time.time()  # the start counts as a message for "none since"
        self.identities: dict[str, int] | None = None  # read at scrape time; None: unknown
        self.ins_collisions: int | None = None
        self._live = _Live()
        self._live.gauges.append(
            (
                "pamfr_last_message_timestamp_seconds",
                "Unix time of the last message answered (the daemon's start before the first)",
                lambda: {(): self.last_message},
                (),
            )
        )
        self._live.gauges.append(
            (
                "pamfr_identities",
                "Active patients by identity status (read from the store at scrape time)",
                lambda: {(s,): n for s, n in (self.identities or {}).items()},
                ("status",),
            )
        )
        self._live.gauges.append(
            (
                "pamfr_ins_collisions",
                "Active patients whose INS is also held by another active patient",
                lambda: {} if self.ins_collisions is None else {(): self.ins_collisions},
                (),
            )
        )
        r.register(self._live)
        # Children looked up once: a labels() call per message takes a lock and checks names.
        self._message_children: dict[tuple[str, str, str, str], Counter] = {}
        self._error_children: dict[tuple[str, int, str], Counter] = {}

    # -- called on the path of each message -----------------------------------------------

    def answered(self, door: str, outcome: Outcome) -> None:
        """One message answered (whatever its ACK code), with its ERR segments."""
        problems = outcome.problems
        warning = "1" if any(p.severity == "W" for p in problems) else "0"
        key = (door, event_label(outcome.event), outcome.code, warning)
        child = self._message_children.get(key)
        if child is None:
            child = self.messages.labels(*key)
            self._message_children[key] = child
        child.inc()
        for p in problems:
            ekey = (door, p.code, p.severity)
            echild = self._error_children.get(ekey)
            if echild is None:
                echild = self.errors.labels(door, str(p.code), p.severity)
                self._error_children[ekey] = echild
            echild.inc()
        self.last_message = time.time()

    def ack_sent(self, arrived: float) -> None:
        """An ACK written; `arrived` is time.perf_counter() when its frame arrived."""
        self.ack_latency.observe(time.perf_counter() - arrived)

    def committed(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def connection_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def file_done(self, ok: bool) -> None:
        self.files.labels("done" if ok else "error").inc()

    def webhook_result(self, subscriber: str, ok: bool) -> None:
        """One POST to a webhook subscriber, acknowledged or not."""
        (self.webhook_delivered if ok else self.webhook_failures).labels(subscriber).inc()

    def purge_done(self, purged: int | None) -> None:
        """A retention pass: how many raw messages it emptied, None when it failed."""
        if purged is None:
            self.purge_failures.inc()
        else:
            self.purged.inc(purged)

    # -- read at scrape time ----------------------------------------------------------------

    def gauge(
        self,
        name: str,
        doc: str,
        read: Callable[[], float | dict[tuple[str, ...], float]],
        labels: tuple[str, ...] = (),
    ) -> None:
        """A gauge whose value (or values, by label values) `read` returns at scrape time."""

        def values() -> dict[tuple[str, ...], float]:
            value = read()
            return value if isinstance(value, dict) else {(): value}

        self._live.gauges.append((name, doc, values, labels))

    def counter(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A counter (`name` without _total) that an object keeps itself, read at scrape time."""
        self._live.counters.append((name, doc, read))

    def exposition(self) -> bytes:
        """The Prometheus text format of everything above."""
        return generate_latest(self.registry)


def watch_daemon(
    metrics: Metrics, server: MLLPServer, handler: AsyncReceiver, watcher: FileDropWatcher | None
) -> None:
    """The values a scrape reads from the daemon's running objects."""
    metrics.gauge(
        "pamfr_open_connections", "MLLP connections open", lambda: server.connection_count
    )
    metrics.gauge(
        "pamfr_queue_depth",
        "Messages in hand, by stage: being parsed, or parsed and waiting for their commit",
        lambda: {("parse",): handler.parsing, ("commit",): handler.committing},
        ("stage",),
    )
    workers = handler.parse_workers
    if workers is not None:
        metrics.gauge(
            "pamfr_parse_workers_alive", "Parse worker processes alive", lambda: workers.alive
        )
        metrics.counter(
            "pamfr_parse_worker_restarts",
            "Parse worker processes replaced after they stopped (killed, out of memory)",
            lambda: workers.restarts,
        )
    if watcher is not None:
        metrics.gauge(
            "pamfr_filedrop_backlog_files",
            "Files waiting in the inbound folders (settling or not processed yet)",
            lambda: watcher.backlog,
        )
        metrics.gauge(
            "pamfr_filedrop_held_seconds",
            "Seconds the first file in line of an inbound folder has held the folder back "
            "(settled, yet incomplete or its writer not done); 0 when none does",
            lambda: {
                (box,): h.held_for(watcher.clock()) if h else 0.0
                for box, h in watcher.holds().items()
            },
            ("inbox",),
        )
        metrics.gauge(
            "pamfr_filedrop_held_back_files",
            "Files waiting behind the file that holds an inbound folder back; 0 when none does",
            lambda: {(box,): h.behind if h else 0 for box, h in watcher.holds().items()},
            ("inbox",),
        )


def watch_delivery(metrics: Metrics, delivery: WebhookDelivery) -> None:
    """The values a scrape reads from the webhook delivery's subscribers."""
    metrics.gauge(
        "pamfr_webhook_parked",
        "1 when deliveries to the subscriber stopped after too many failures",
        lambda: {(s.name,): float(s.parked) for s in delivery.subscribers},
        ("subscriber",),
    )
    metrics.gauge(
        "pamfr_webhook_backlog",
        "Events after the subscriber's cursor (not all of them may be of its types)",
        lambda: {(s.name,): float(s.backlog) for s in delivery.subscribers},
        ("subscriber",),
    )
