"""The change feed end to end: real messages over MLLP to a real `pamfr serve`, its events
read back through GET /events and `pamfr events`, and POSTed to a real HTTP receiver on
127.0.0.1 (tests/webhook_sink.py) in order, signed, at least once, across a kill -9."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pamfr.feed.store import get_cursor, read_events
from pamfr.hl7.samples import Person, message
from pamfr.identity.changefeed import EVENT_TYPES
from pamfr.store.db import make_engine
from tests.conftest import REPO
from tests.helpers import AUTHORIZATION, TEST_TOKEN, Daemon, run_cli, send, start_daemon
from tests.mllp_harness import msg, with_pid
from tests.webhook_sink import WebhookSink

SECRET = "not-a-real-secret-0123456789abcdef"
INS = "279035121518989"  # the ANS test identity (test OID)
SPEC = REPO / "tests" / "corpus" / "spec"
README = (REPO / "README.md").read_text(encoding="utf-8")


def spec(name: str, control_id: str | None = None) -> bytes:
    raw = (SPEC / name).read_bytes()
    return raw.replace(b"|SPEC-", f"|{control_id}-".encode()) if control_id else raw


def mixed_run() -> list[str | bytes]:
    """Creates, updates, a merge, an IPP change, links, the INS life cycle, a collision."""
    return [
        msg("A28", Person("F1", ins=INS)),
        msg("A31", Person("F1", ins=INS, used_name="NEWNAME")),
        msg("A28", Person("F2")),
        msg("A40", Person("F1"), prior_ipp="F2"),
        msg("A28", Person("F3")),
        msg("A47", Person("F4"), prior_ipp="F3"),
        msg("A24", Person("F1"), other=Person("F4")),
        msg("A37", Person("F1"), other=Person("F4")),
        spec("441-a31-nia-and-nir.hl7"),  # created with a NIR
        spec("443-a47-ins-deleted.hl7"),  # INS deleted: validee
        spec("441-a31-nia-and-nir.hl7", "AGAIN"),  # qualified again
        spec("444-a47-ins-downgraded-prov.hl7"),  # deleted and provisoire
        msg("A28", Person("F5", ins=INS)),  # the INS of F1: a collision
        with_pid(msg("A31", Person("F5", ins=INS)), f32="PROV"),  # F5 lets it go
    ]


def store_events(db_url: str) -> list[dict]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return read_events(conn, 0, 100_000)
    finally:
        engine.dispose()


def start(
    db_url: str, tmp_path: Path, sink: WebhookSink | None, log: str = "serve.log", **hook
) -> tuple[Daemon, int]:
    """`pamfr serve` with its HTTP port and, given a sink, a webhook subscriber "crm"."""
    lines = ["[feed]", "poll_interval = 0.1", "retry_initial = 0.05", "retry_max = 0.2", ""]
    if sink is not None:
        lines += [
            "[[webhooks]]",
            'name = "crm"',
            f'url = "{sink.url}"',
            'secret_env = "CRM_SECRET"',
        ]
        lines += [f"{k} = {json.dumps(v)}" for k, v in hook.items()]
    config = tmp_path / "pamfr.toml"
    config.write_text("\n".join(lines) + "\n")
    served = start_daemon(
        db_url,
        tmp_path / log,
        "--http",
        "127.0.0.1:0",
        config=config,
        env={"CRM_SECRET": SECRET},
    )
    http_port = int(served.wait_log(r"HTTP port on 127\.0\.0\.1:(\d+)").group(1))
    return served, http_port


def get(port: int, path: str) -> tuple[int, dict | str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=AUTHORIZATION)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, body = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def stop(served: Daemon) -> None:
    served.signal(signal.SIGTERM)
    try:
        assert served.proc.wait(30) == 0, served.log()
    finally:
        served.kill_group()


def assert_in_order_none_missing(received: list[int], expected: list[int]) -> None:
    """Every expected id came, no other; when one came, every smaller one had come before
    (a crash may send some again: duplicates are allowed)."""
    assert set(received) == set(expected)
    seen: set[int] = set()
    earlier = sorted(expected)
    for event_id in received:
        missing = [e for e in earlier if e < event_id and e not in seen]
        assert not missing, f"{event_id} delivered before {missing}"
        seen.add(event_id)


def wait_until(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)


def cursor(db_url: str):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return get_cursor(conn, "crm")
    finally:
        engine.dispose()


# -- push ---------------------------------------------------------------------------------


def test_every_event_of_a_mixed_run_arrives_signed_in_order(db_url, tmp_path):
    sink = WebhookSink(SECRET)
    served, _ = start(db_url, tmp_path, sink)
    try:
        acks = send(served.port, mixed_run())
        assert [a.code for a in acks] == ["AA"] * len(acks), [a.errs for a in acks]
        events = store_events(db_url)
        received = sink.wait_for({e["id"] for e in events})
    finally:
        stop(served)
    # Each event once (nothing failed), in the store's order, exactly as GET /events says.
    assert received == [e["id"] for e in events]
    assert [r.event for r in sink.received] == events
    assert all(r.signed for r in sink.received)
    assert {e["type"] for e in events} == set(EVENT_TYPES)
    # A merge names source and survivor; an INS removal its reason; no name anywhere.
    merged = next(e for e in events if e["type"] == "patient.merged")
    assert merged["detail"] == {"survivor": merged["other_patient_id"]}
    reasons = [e["detail"]["reason"] for e in events if e["type"] == "patient.ins-removed"]
    assert reasons[:2] == ["ins-deleted", "ins-deleted"]
    assert "NEWNAME" not in json.dumps(events) and INS not in json.dumps(events)
    assert all(e["version_id"] == str(e["message_id"]) for e in events)


def test_kill_9_in_mid_delivery_then_a_restart_delivers_everything_in_order(sqlite_url, tmp_path):
    sink = WebhookSink(SECRET, delay=0.1)
    served, _ = start(sqlite_url, tmp_path, sink)
    try:
        send(served.port, [message("A28", Person(f"K{n}"), f"K{n}") for n in range(40)])
        expected = [e["id"] for e in store_events(sqlite_url)]
        assert len(expected) == 40
        wait_until(lambda: len(sink.ids()) >= 12, "12 events delivered")
    finally:
        served.kill_group()  # SIGKILL, parse workers and all
    assert served.proc.returncode == -signal.SIGKILL
    before = len(sink.ids())
    assert before < 40  # killed in mid-delivery
    sink.delay = 0.0
    served, _ = start(sqlite_url, tmp_path, sink, log="restart.log")
    try:
        received = sink.wait_for(set(expected))
    finally:
        stop(served)
    assert_in_order_none_missing(received, expected)
    assert all(r.signed for r in sink.received)
    assert cursor(sqlite_url).last_id == expected[-1]


def test_a_subscriber_down_for_a_while_gets_the_backlog_in_order(sqlite_url, tmp_path):
    sink = WebhookSink(SECRET)
    sink.stop()
    served, _ = start(sqlite_url, tmp_path, sink)
    try:
        send(served.port, [message("A28", Person(f"D{n}"), f"D{n}") for n in range(15)])
        wait_until(lambda: (c := cursor(sqlite_url)) and c.failures >= 2, "failures recorded")
        assert cursor(sqlite_url).last_id == 0 and not cursor(sqlite_url).parked
        sink.start()  # back on the same port
        send(served.port, [message("A28", Person(f"D{n}"), f"D{n}") for n in range(15, 20)])
        expected = [e["id"] for e in store_events(sqlite_url)]
        received = sink.wait_for(set(expected))
    finally:
        stop(served)
    assert received == expected


def test_parked_after_n_failures_shown_then_retried(sqlite_url, tmp_path):
    sink = WebhookSink(SECRET, status=500)
    served, http = start(sqlite_url, tmp_path, sink, park_after=3, events=["patient.created"])
    try:
        send(served.port, [msg("A28", Person("R1")), msg("A31", Person("R1", used_name="X"))])
        send(served.port, [msg("A28", Person("R2"))])

        def parked() -> list[dict]:
            result = run_cli("events", "--failed", "--json", "--db", sqlite_url)
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        (entry,) = wait_until(parked, "crm parked")
        assert (entry["name"], entry["failures"], entry["last_id"]) == ("crm", 3, 0)
        assert entry["last_error"] == "HTTP 500"
        assert sink.attempts == 3  # parked: no fourth try
        status, ready = get(http, "/readyz")
        assert status == 200 and ready["checks"]["webhooks"]["detail"].endswith("parked: crm")
        _, metrics = get(http, "/metrics")
        assert 'pamfr_webhook_parked{subscriber="crm"} 1.0' in metrics
        assert 'pamfr_webhook_failures_total{subscriber="crm"} 3.0' in metrics
        sink.status = 204
        retried = run_cli("events", "--retry", "crm", "--db", sqlite_url)
        assert retried.returncode == 0, retried.stderr
        created = [e["id"] for e in store_events(sqlite_url) if e["type"] == "patient.created"]
        assert sink.wait_for(set(created)) == created  # the types it asked for only
        assert parked() == []
        _, ready = get(http, "/readyz")
        wait_until(
            lambda: get(http, "/readyz")[1]["checks"]["webhooks"]["detail"].endswith("none parked"),
            "unparked in /readyz",
        )
    finally:
        stop(served)
    unknown = subprocess.run(
        [sys.executable, "-m", "pamfr", "events", "--retry", "nobody", "--db", sqlite_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "Error: --retry: no webhook subscriber named 'nobody' in the store"
    ]


# -- pull ---------------------------------------------------------------------------------


def test_get_events_pages_through_the_feed(db_url, tmp_path):
    served, http = start(db_url, tmp_path, None)
    try:
        send(served.port, mixed_run())
        pages, after = [], 0
        while True:
            status, page = get(http, f"/events?after={after}&limit=4")
            assert status == 200
            if page["next"] is None:
                assert page["events"] == []
                break
            assert len(page["events"]) <= 4 and page["next"] == page["events"][-1]["id"]
            pages += page["events"]
            after = page["next"]
        assert pages == store_events(db_url)
        # Resumable from any id.
        middle = pages[5]["id"]
        assert get(http, f"/events?after={middle}")[1]["events"] == pages[6:]
        for query, says in [
            ("after=-1", "after must be a whole number"),
            ("after=x", "after must be a whole number"),
            ("limit=0", "limit must be between 1 and 1000"),
            ("limit=5000", "limit must be between 1 and 1000"),
            ("since=3", "unknown parameter 'since'"),
        ]:
            status, answer = get(http, f"/events?{query}")
            assert status == 400 and answer["error"].startswith(says), (query, answer)
        # The README's curl line, against this daemon.
        line = next(
            ln for ln in README.splitlines() if ln.startswith("curl ") and "/events?after=0" in ln
        )
        words = [
            w.replace("127.0.0.1:8090", f"127.0.0.1:{http}").replace("$TOKEN", TEST_TOKEN)
            for w in shlex.split(line)
        ]
        result = subprocess.run(words, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert (
            json.loads(result.stdout)["events"] == pages[: len(json.loads(result.stdout)["events"])]
        )
    finally:
        stop(served)


def readme_events_lines() -> list[str]:
    return [
        re.split(r"\s+#\s", ln, maxsplit=1)[0].strip()
        for ln in README.splitlines()
        if ln.startswith("pamfr events")
    ]


def test_pamfr_events_prints_the_feed_and_follows_it(sqlite_url, tmp_path):
    served, _ = start(sqlite_url, tmp_path, None)
    try:
        send(served.port, mixed_run())
        events = store_events(sqlite_url)
        base = [sys.executable, "-m", "pamfr", "events", "--db", sqlite_url]
        listed = subprocess.run(
            [*base, "--json", "--after", "3", "--limit", "5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert [json.loads(ln) for ln in listed.stdout.splitlines()] == events[3:8]
        table = subprocess.run(base, capture_output=True, text=True, timeout=60)
        assert [ln.split()[0] for ln in table.stdout.splitlines()[1:]] == [
            str(e["id"]) for e in events
        ]
        # --follow prints what comes after, until Ctrl-C (exit 0).
        follow = subprocess.Popen(
            [*base, "--follow", "--json", "--interval", "0.1", "--after", str(events[-1]["id"])],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            send(served.port, [msg("A28", Person("FOLLOW"))])
            line = follow.stdout.readline()
            assert json.loads(line)["type"] == "patient.created"
        finally:
            follow.send_signal(signal.SIGINT)
            assert follow.wait(30) == 0
        # The README's lines run too.
        lines = readme_events_lines()
        assert any("--follow" in ln for ln in lines)
        for ln in lines:
            args = shlex.split(ln)[2:]
            if "--follow" in args:
                continue  # run above
            result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (ln, result.stderr)
    finally:
        stop(served)
    bad = subprocess.run(
        [sys.executable, "-m", "pamfr", "events", "--after", "-1", "--db", sqlite_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_failure_of_the_store_while_delivering_does_not_end_the_delivery(sqlite_url, engine):
    """resource_for (or a cursor save) failing once: logged, the page is taken again from
    the saved cursor, and every event still arrives."""
    import asyncio

    from sqlalchemy.exc import OperationalError

    from pamfr.feed.delivery import WebhookDelivery
    from pamfr.path.receiver import Receiver
    from pamfr.settings.config import FeedSettings, WebhookSettings

    receiver = Receiver(engine)
    assert receiver.handle(message("A28", Person(ipp="FAIL1"), "FAIL-1").encode()).code == "AA"
    sink = WebhookSink("s3cret-s3cret-s3cret-s3cret-s3cret")
    calls = []

    def resource_for(patient_id: int) -> dict:
        calls.append(patient_id)
        if len(calls) == 1:
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return {"resourceType": "Patient", "id": str(patient_id)}

    async def scenario() -> None:
        webhook = WebhookSettings(
            name="sub",
            url=sink.url,
            secret="s3cret-s3cret-s3cret-s3cret-s3cret",
            include_resource=True,
        )
        feed = FeedSettings(poll_interval=0.1, retry_initial=0.1, retry_max=0.2)
        delivery = WebhookDelivery(engine, [webhook], feed, resource_for=resource_for)
        delivery.start()
        try:
            raw = message("A28", Person(ipp="FAIL2"), "FAIL-2").encode()
            assert (await asyncio.to_thread(receiver.handle, raw)).code == "AA"
            deadline = time.monotonic() + 30
            while len({r.event_id for r in sink.received}) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await delivery.close()

    try:
        asyncio.run(scenario())
    finally:
        sink.stop()
        engine.dispose()
    assert sorted({r.event_id for r in sink.received}) == [1, 2]
    assert len(calls) >= 3  # the first failed, then each event got its resource
