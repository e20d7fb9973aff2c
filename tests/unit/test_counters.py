"""Each room that counts reports to a protocol of its own, with a null object by default (no
Prometheus registry unless the daemon gives its Metrics), and the daemon's Metrics is one
object that implements them all, method for method."""

from __future__ import annotations

import inspect

import pytest

from pamfr.feed.delivery import DeliveryCounters
from pamfr.feed.delivery import _NotCounted as DeliveryNotCounted
from pamfr.hl7.frame import Outcome
from pamfr.ingest.filedrop import FileDropCounters
from pamfr.ingest.filedrop import _NotCounted as FileDropNotCounted
from pamfr.path.pipeline import GroupCommitWriter, PathCounters
from pamfr.path.pipeline import _NotCounted as PathNotCounted
from pamfr.service.metrics import Metrics
from pamfr.transport.server import ServerCounters
from pamfr.transport.server import _NotCounted as ServerNotCounted

ROOMS = [
    (ServerCounters, ServerNotCounted),
    (PathCounters, PathNotCounted),
    (FileDropCounters, FileDropNotCounted),
    (DeliveryCounters, DeliveryNotCounted),
]


def _members(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(value)
        for name, value in vars(protocol).items()
        if callable(value) and not name.startswith("_")
    }


@pytest.mark.parametrize(("protocol", "null"), ROOMS, ids=lambda p: p.__name__)
def test_metrics_and_the_null_object_implement_the_rooms_protocol(protocol, null):
    members = _members(protocol)
    assert members
    for implementation in (Metrics, null):
        for name, wanted in members.items():
            found = inspect.signature(getattr(implementation, name))
            assert list(found.parameters) == list(wanted.parameters), (implementation, name)


def test_the_null_objects_take_every_call():
    outcome = Outcome(b"ACK", "AA", 1, "CTRL", "A28")
    ServerNotCounted().connection_refused("allow_list")
    ServerNotCounted().ack_sent(0.0)
    PathNotCounted().committed(3, 0.01)
    PathNotCounted().answered("mllp", outcome)
    FileDropNotCounted().file_done(True)
    DeliveryNotCounted().webhook_result("crm", False)


def test_the_writer_counts_nothing_unless_given_counters():
    writer = GroupCommitWriter(None, 4)  # type: ignore[arg-type]  # never asked to commit
    try:
        assert isinstance(writer.metrics, PathNotCounted)
    finally:
        writer.close()
