"""The metrics module and what `pamfr status` makes of its text: labels stay bounded and free
of patient data, each daemon counts in its own registry, the summary reads the counts back."""

from __future__ import annotations

from prometheus_client import REGISTRY

from pamfr.cli.status import Samples, render, summary
from pamfr.hl7.errors import Problem
from pamfr.hl7.frame import Outcome
from pamfr.service.metrics import Metrics, event_label
from pamfr.settings.readiness import Check, Readiness


def _outcome(code: str, event: str, *problems: Problem) -> Outcome:
    return Outcome(b"ACK", code, 1, "CTRL", event, problems=problems)


def test_event_labels_are_the_supported_events_or_other():
    assert event_label("A28") == "A28"
    assert event_label("Z99") == "Z99"
    assert event_label("A99") == "other"
    assert event_label("DUPONT^JEAN") == "other"  # whatever a sender puts in MSH-9.2
    assert event_label("") == "none"


def test_outcomes_are_counted_by_door_event_code_and_warning():
    m = Metrics()
    warn = Problem(103, "PID^1^8", "PID-8 'O' recorded as 'U'", severity="W")
    err = Problem(102, "PID^1^3", "invalid INS")
    m.answered("mllp", _outcome("AA", "A28"))
    m.answered("mllp", _outcome("AA", "A28"))
    m.answered("mllp", _outcome("AA", "A31", warn))
    m.answered("file", _outcome("AE", "A28", err))
    m.answered("mllp", _outcome("AR", "XYZ", Problem(201, "MSH^1^9^1^2", "unsupported")))
    s = Samples.parse(m.exposition().decode())
    assert s.by("pamfr_messages_total", "outcome") == {"AA": 3, "AE": 1, "AR": 1}
    assert s.total("pamfr_messages_total", door="mllp", event="A28", warning="0") == 2
    assert s.total("pamfr_messages_total", event="A31", warning="1") == 1
    assert s.total("pamfr_messages_total", door="file", outcome="AE") == 1
    assert s.total("pamfr_messages_total", event="other", outcome="AR") == 1
    assert s.by("pamfr_ack_errors_total", "code", severity="E") == {"102": 1, "201": 1}
    assert s.by("pamfr_ack_errors_total", "code", severity="W") == {"103": 1}


def test_each_daemon_counts_in_its_own_registry():
    one, two = Metrics(), Metrics()
    one.answered("mllp", _outcome("AA", "A28"))
    assert Samples.parse(one.exposition().decode()).total("pamfr_messages_total") == 1
    assert Samples.parse(two.exposition().decode()).total("pamfr_messages_total") == 0
    assert not any(name.startswith("pamfr_") for name in REGISTRY._names_to_collectors)


def test_status_summary_reads_the_counts_back():
    m = Metrics()
    for _ in range(3):
        m.answered("mllp", _outcome("AA", "A28"))
    m.answered("mllp", _outcome("AE", "A28", Problem(102, "PID^1^3", "invalid INS")))
    for seconds in (0.003, 0.004, 0.03, 0.5):
        m.ack_latency.observe(seconds)
    m.committed(3, 0.004)
    m.committed(1, 0.002)
    m.connection_refused("max_connections")
    m.identities = {"qualifiee": 2, "provisoire": 1}
    m.ins_collisions = 1
    figures = summary(Samples.parse(m.exposition().decode()))
    assert figures["messages"]["by_outcome"] == {"AA": 3, "AE": 1}
    assert figures["ack_latency"]["count"] == 4
    assert figures["ack_latency"]["p50_under_ms"] == 5  # two of four within the 5 ms bucket
    assert figures["ack_latency"]["p99_under_ms"] == 500
    assert figures["commits"]["mean_batch"] == 2
    assert figures["connections"]["refused"] == 1
    assert figures["identities"] == {
        "by_status": {"qualifiee": 2, "provisoire": 1},
        "ins_collisions": 1,
    }
    ready = Readiness((Check("mllp", True, "accepting"), Check("database", False, "no answer")))
    lines = render("127.0.0.1:8090", ready.as_json(), figures)
    assert lines[0] == "pamfr at 127.0.0.1:8090: not ready"
    assert "  database       FAILED no answer" in lines
    assert "messages         4: AA 3, AE 1 (0 with a warning)" in lines
    assert "  ERR codes      102 x1" in lines
    assert "connections      0 open, 1 refused" in lines
    assert "identities       provisoire 1, qualifiee 2; INS collisions 1" in lines


def test_readiness_names_what_is_down():
    ready = Readiness((Check("mllp", True, "accepting on 127.0.0.1:2575"),))
    assert ready.as_json() == {
        "status": "ready",
        "checks": {"mllp": {"ok": True, "detail": "accepting on 127.0.0.1:2575"}},
    }
    down = Readiness(
        (Check("mllp", False, "stopping"), Check("parse_workers", False, "1 of 2 alive"))
    )
    assert down.as_json()["reason"] == "mllp: stopping; parse_workers: 1 of 2 alive"
