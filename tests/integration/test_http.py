"""The daemon's HTTP port, against a real `pamfr serve` over real sockets: /healthz, /readyz,
/metrics read back with Prometheus' own text parser, readiness lost with the database, and
`pamfr status`."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter

import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select, text

from pamfr.hl7.samples import Person, message
from pamfr.store.schema import patient
from tests.conftest import REPO
from tests.helpers import Daemon, run_cli, send, start_daemon

# One parse worker: the machine is shared, and the count shows in the readiness detail.
ONE_WORKER = {"PAMFR_RECEIVER_PARSE_WORKERS": "1"}


def http_port(daemon: Daemon) -> int:
    found = re.search(r"HTTP port on [^ ]+:(\d+)", daemon.log())
    assert found, daemon.log()
    return int(found.group(1))


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text_format: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics answer: (name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text_format):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def total(found: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_readiness_and_metrics_of_a_real_daemon(db_url, engine, tmp_path):
    daemon = start_daemon(db_url, tmp_path / "serve.log", "--http", "127.0.0.1:0", env=ONE_WORKER)
    port = http_port(daemon)
    people = {
        "plain": Person(ipp="HTTP0001", birth_name="SECRETNAME"),
        "plain2": Person(ipp="HTTP0002", birth_name="SECRETNAME"),
        "prov": Person(ipp="HTTP0003", birth_name="SECRETNAME", pid32=("PROV",)),
        "warned": Person(ipp="HTTP0004", birth_name="SECRETNAME", sex="O"),  # W 103
        "bad_ins": Person(ipp="HTTP0005", birth_name="SECRETNAME", ins="123456789012345"),
    }
    messages = [message("A28", p, f"HTTP-{k}") for k, p in people.items()]
    messages.append(message("A99", Person(ipp="HTTP0006"), "HTTP-unsupported"))  # AR 201
    try:
        assert get(port, "/healthz") == (200, '{"status":"ok"}')
        code, body = get(port, "/readyz")
        assert code == 200, body
        ready = json.loads(body)
        assert ready["status"] == "ready"
        assert {n: c["ok"] for n, c in ready["checks"].items()} == {
            "mllp": True,
            "database": True,
            "parse_workers": True,
        }
        assert ready["checks"]["parse_workers"]["detail"] == "1 of 1 alive"
        assert ready["checks"]["mllp"]["detail"] == f"accepting on 127.0.0.1:{daemon.port}"

        acks = send(daemon.port, messages)
        codes = Counter(a.code for a in acks)
        assert codes == {"AA": 4, "AE": 1, "AR": 1}
        errs = Counter((e[3].split("^")[0], e[4]) for a in acks for e in a.errs)
        assert errs == {("103", "W"): 1, ("102", "E"): 1, ("201", "E"): 1}

        # A query string is neither needed nor logged (it could carry anything).
        code, metrics_text = get(port, "/metrics?ipp=HTTP0001&name=SECRETNAME")
        assert code == 200
        assert get(port, "/patient?ipp=HTTP0001")[0] == 401  # a route is closed unless opened
    finally:
        assert daemon.stop() == 0
    found = samples(metrics_text)
    expected_messages = {
        ("A28", "AA", "0"): 3,
        ("A28", "AA", "1"): 1,
        ("A28", "AE", "0"): 1,
        ("other", "AR", "0"): 1,  # an unsupported event is not a label of its own
    }
    got_messages = {
        (ls["event"], ls["outcome"], ls["warning"]): v
        for (n, labels), v in found.items()
        if n == "pamfr_messages_total"
        for ls in [dict(labels)]
        if ls["door"] == "mllp"
    }
    assert got_messages == expected_messages
    assert value(found, "pamfr_ack_errors_total", door="mllp", code="103", severity="W") == 1
    assert value(found, "pamfr_ack_errors_total", door="mllp", code="102", severity="E") == 1
    assert value(found, "pamfr_ack_errors_total", door="mllp", code="201", severity="E") == 1
    assert value(found, "pamfr_ack_latency_seconds_count") == 6
    assert 0 < value(found, "pamfr_ack_latency_seconds_sum") < 60
    assert value(found, "pamfr_ack_latency_seconds_bucket", le="+Inf") == 6
    assert value(found, "pamfr_commit_batch_size_sum") == 6
    assert value(found, "pamfr_commit_duration_seconds_count") >= 1
    assert value(found, "pamfr_ready") == 1
    assert value(found, "pamfr_parse_workers_alive") == 1
    assert value(found, "pamfr_parse_worker_restarts_total") == 0
    assert value(found, "pamfr_connections_refused_total") is None  # none refused yet
    assert value(found, "pamfr_queue_depth", stage="commit") == 0
    assert time.time() - value(found, "pamfr_last_message_timestamp_seconds") < 120
    # Identities: the store's active patients by status (those of the four AA messages).
    with engine.connect() as conn:
        stored = Counter(conn.execute(select(patient.c.status)).scalars())
    engine.dispose()
    assert sum(stored.values()) == 4
    assert {s: total(found, "pamfr_identities", status=s) for s in stored} == dict(stored)
    assert value(found, "pamfr_ins_collisions") == 0
    # The sample alert rules read metrics that the daemon exposes.
    rules = yaml.safe_load((REPO / "conf" / "pamfr-alerts.yml").read_text())["groups"][0]
    assert [r["alert"] for r in rules["rules"]] == [
        "PamfrNoMessage",
        "PamfrRejectRateHigh",
        "PamfrNotReady",
    ]
    exposed = {n for n, _ in found}
    for rule in rules["rules"]:
        names = set(re.findall(r"\bpamfr_\w+", rule["expr"]))
        assert names and names <= exposed, (rule["alert"], names - exposed)
    # No patient data anywhere: not in the metrics, not in the log of the requests.
    for secret in ("SECRETNAME", "HTTP0001", "19790328"):
        assert secret not in metrics_text
    assert "SECRETNAME" not in daemon.log() and "ipp=" not in daemon.log()


def test_readiness_is_lost_when_the_database_is_dropped(pg_server_url, tmp_path):
    name = f"pamfr_ready_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    daemon = start_daemon(url, tmp_path / "serve.log", "--http", "127.0.0.1:0", env=ONE_WORKER)
    port = http_port(daemon)
    try:
        assert get(port, "/readyz")[0] == 200
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        code, body = get(port, "/readyz")
        assert code == 503, body
        answer = json.loads(body)
        assert answer["status"] == "not ready"
        assert answer["reason"].startswith("database: ")
        # The pooled connection was killed with the database; the next one is refused, and
        # the reason is the driver's first line (no SQL, no values).
        deadline = time.monotonic() + 20
        while name not in answer["reason"] and time.monotonic() < deadline:
            code, body = get(port, "/readyz")
            assert code == 503, body
            answer = json.loads(body)
        assert f'database "{name}" does not exist' in answer["reason"]
        assert answer["checks"]["mllp"]["ok"] and answer["checks"]["parse_workers"]["ok"]
        assert get(port, "/healthz")[0] == 200  # the process itself still answers
        found = samples(get(port, "/metrics")[1])
        assert value(found, "pamfr_ready") == 0
        assert total(found, "pamfr_identities") == 0  # no figure rather than a stale one
        status = run_cli("status", "--http", f"127.0.0.1:{port}")
        assert status.returncode == 1, status.stderr
        assert "not ready" in status.stdout and "database       FAILED" in status.stdout
    finally:
        assert daemon.stop() == 0
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_status_reads_the_running_daemon(sqlite_url, tmp_path):
    config = tmp_path / "pamfr.toml"
    daemon = start_daemon(
        sqlite_url, tmp_path / "serve.log", "--http", "127.0.0.1:0", env=ONE_WORKER
    )
    port = http_port(daemon)
    try:
        acks = send(daemon.port, [message("A28", Person(ipp=f"ST{i}"), f"ST-{i}") for i in (1, 2)])
        assert [a.code for a in acks] == ["AA", "AA"]
        by_flag = run_cli("status", "--http", f"127.0.0.1:{port}")
        by_env = run_cli("status", env={"PAMFR_HTTP_LISTEN": f"127.0.0.1:{port}"})
        config.write_text(f'[http]\nlisten = "0.0.0.0:{port}"\n')  # asked on the loopback
        by_config = run_cli("--config", str(config), "status", "--json")
    finally:
        assert daemon.stop() == 0
    assert by_flag.returncode == 0, by_flag.stderr
    lines = by_flag.stdout.splitlines()
    assert lines[0] == f"pamfr at 127.0.0.1:{port}: ready"
    assert re.search(r"^  parse_workers  ok +1 of 1 alive$", by_flag.stdout, re.M)
    assert "messages         2: AA 2 (0 with a warning)" in lines
    assert "  by door        mllp 2" in lines
    assert "connections      0 open, 0 refused" in lines
    assert re.search(r"^ACK latency      2 ACKs, mean [0-9.]+ ms", by_flag.stdout, re.M)
    assert re.search(r"^identities       \w+ 2; INS collisions 0$", by_flag.stdout, re.M)
    assert by_env.returncode == 0 and by_env.stdout.splitlines()[0] == lines[0]
    assert by_config.returncode == 0, by_config.stderr
    figures = json.loads(by_config.stdout)
    assert figures["readiness"]["status"] == "ready"
    assert figures["messages"]["by_outcome"] == {"AA": 2}
    assert figures["ack_latency"]["count"] == 2
    assert sum(figures["identities"]["by_status"].values()) == 2


def test_status_says_in_one_line_when_nothing_answers(tmp_path):
    port = free_port()
    nothing = run_cli("status", "--http", f"127.0.0.1:{port}", "--timeout", "5")
    assert nothing.returncode == 2
    assert nothing.stdout == ""
    assert nothing.stderr.strip().splitlines() == [
        f"Error: nothing answers at http://127.0.0.1:{port}: [Errno 111] Connection refused"
    ]
    unset = run_cli("status", env={"PAMFR_HTTP_LISTEN": ""})
    assert unset.returncode == 2
    assert len(unset.stderr.strip().splitlines()) == 1
    assert "give --http HOST:PORT, or set [http] listen" in unset.stderr
    bad = run_cli("status", "--http", "localhost")
    assert bad.returncode == 2
    assert "expected HOST:PORT" in bad.stderr and "Traceback" not in bad.stderr


def test_serve_refuses_an_http_port_it_cannot_take(sqlite_url, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--port", "0", "--db", sqlite_url, "--http", f"127.0.0.1:{port}", timeout=60
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (http.listen)" in result.stderr
    assert "Traceback" not in result.stderr
    bad = run_cli("serve", "--db", sqlite_url, env={"PAMFR_HTTP_LISTEN": "8090"})
    assert bad.returncode != 0
    assert "http.listen: expected HOST:PORT" in bad.stderr


def test_open_and_refused_connections_are_counted(sqlite_url, tmp_path):
    daemon = start_daemon(
        sqlite_url,
        tmp_path / "serve.log",
        "--http",
        "127.0.0.1:0",
        env={**ONE_WORKER, "PAMFR_SERVER_MAX_CONNECTIONS": "2"},
    )
    port = http_port(daemon)
    held = [socket.create_connection(("127.0.0.1", daemon.port), timeout=10) for _ in range(2)]
    try:
        deadline = time.monotonic() + 20
        while True:
            found = samples(get(port, "/metrics")[1])
            if value(found, "pamfr_open_connections") == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert value(found, "pamfr_open_connections") == 2
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as third:
            assert third.recv(1) == b""  # closed at once: over max_connections
        found = samples(get(port, "/metrics")[1])
        assert value(found, "pamfr_connections_refused_total", reason="max_connections") == 1
        assert value(found, "pamfr_open_connections") == 2
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 20
        while value(found, "pamfr_open_connections") != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            found = samples(get(port, "/metrics")[1])
        assert value(found, "pamfr_open_connections") == 0
    finally:
        for sock in held:
            sock.close()
        assert daemon.stop() == 0
