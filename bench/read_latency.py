"""The FHIR read API on a big store: latency of each kind of read, alone and while 8 MLLP
connections ingest, and what the reads cost the ingest.

    python -m bench.read_latency [--quick] [--patients N] [--reads R] [--pg]

A real `pamfr serve` with its HTTP port and /fhir on a store prefilled with N patients
(bench/prefill.py; 200,000 with --quick, 1,000,000 otherwise). From this process, over one
keep-alive HTTP connection on 127.0.0.1, R requests of each kind one after another: an
identifier search (system|value), a family search (a prefix, 20 a page), a page of 100, a
read, a _history (of patients the ingest created, so with several versions). MLLP throughput
is measured with 8 connections (bench.driver, another process) first alone, then while the
reads run in a thread at --read-rate requests a second (50: a product polling steadily).
Also counts, in this process, the statements of a 100-patient page and of a _history read.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import event, select, text

from bench.__main__ import drop_pg, fresh_db, start_serve, write_messages
from bench.driver import percentile
from bench.prefill import prefill
from pamfr.store.db import make_engine
from pamfr.store.fhirquery import PatientCriteria, patient_versions, reading, search_page
from pamfr.store.schema import patient

TOKEN = "bench-read-0123456789abcdef"
KINDS = ("identifier", "family", "page_of_100", "read", "history")


def start_daemon(db: str, work: Path):
    """`pamfr serve` with /fhir on an HTTP port of its own: (daemon, its HTTP port)."""
    config = work / "read.toml"
    config.write_text(
        f'[http]\nlisten = "127.0.0.1:0"\nfhir = true\n\n[http.tokens]\nbench = "{TOKEN}"\n'
    )
    log = work / "serve-read.log"
    daemon = start_serve(db, log, "--config", str(config))
    found = re.search(r"HTTP port on [^ ]+:(\d+)", log.read_text(errors="replace"))
    assert found, log.read_text()
    return daemon, int(found.group(1))


class Reader:
    """Sequential GETs over one keep-alive connection; latencies in ms by kind."""

    def __init__(self, port: int, patients: int, history_ids: list[int], seed: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.patients = patients
        self.history_ids = history_ids
        self.rng = random.Random(seed)

    def path(self, kind: str) -> str:
        pid = self.rng.randint(1, self.patients)
        if kind == "identifier":
            return f"/fhir/Patient?identifier=urn:pamfr:authority:PREFILL%7CPF{pid:09d}"
        if kind == "family":
            return f"/fhir/Patient?family=prefill{self.rng.randrange(5000)}"
        if kind == "page_of_100":
            return f"/fhir/Patient?_count=100&_cursor={pid}"
        if kind == "read":
            return f"/fhir/Patient/{pid}"
        return f"/fhir/Patient/{self.rng.choice(self.history_ids)}/_history"

    def get(self, path: str) -> None:
        if self.conn.sock is None:  # as a client library does: no Nagle delay on requests
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        answer = self.conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise SystemExit(f"{path}: {answer.status} {body[:200]!r}")

    def run(self, reads: int, stop: threading.Event | None = None, rate: float = 0) -> dict:
        """`reads` rounds of the five kinds; `rate` > 0 paces them (requests a second)."""
        times: dict[str, list[float]] = {k: [] for k in KINDS}
        begin, sent = time.perf_counter(), 0
        for _ in range(reads):
            for kind in KINDS:
                if rate:
                    time.sleep(max(0.0, begin + sent / rate - time.perf_counter()))
                sent += 1
                path = self.path(kind)
                start = time.perf_counter()
                self.get(path)
                times[kind].append((time.perf_counter() - start) * 1000)
            if stop is not None and stop.is_set():
                break
        return {
            k: {
                "n": len(v),
                "p50_ms": round(percentile(v, 50), 2),
                "p99_ms": round(percentile(v, 99), 2),
            }
            for k, v in times.items()
        }


def drive(port: int, messages: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.driver", "--port", str(port)]
        + ["--messages", str(messages), "--connections", "8"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def statements(db: str, history_id: int) -> dict:
    engine = make_engine(db)
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    with reading(engine) as conn:
        start = len(seen)
        search_page(conn, PatientCriteria(), after=None, count=100)
        page = len(seen) - start
        start = len(seen)
        versions = patient_versions(conn, history_id) or []
        history = len(seen) - start
    engine.dispose()
    return {"page_of_100": page, "history": history, "history_versions": len(versions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200,000 patients, fewer reads")
    parser.add_argument("--patients", type=int, default=None)
    parser.add_argument("--reads", type=int, default=None, help="requests of each kind")
    parser.add_argument("--messages", type=int, default=None, help="per ingest run")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument(
        "--read-rate", type=float, default=50.0, help="requests a second during the ingest"
    )
    args = parser.parse_args()
    patients = args.patients or (200_000 if args.quick else 1_000_000)
    reads = args.reads or (200 if args.quick else 1000)
    count = args.messages or (1500 if args.quick else 6000)
    work = Path(tempfile.mkdtemp(prefix="pamfr-bench-read-"))
    db = fresh_db(work, args.pg, "read")
    figures: dict = {
        "store": "pg" if args.pg else "sqlite",
        "patients": patients,
        "reads": reads,
        "read_rate_during_ingest": args.read_rate,
    }
    try:
        started = time.perf_counter()
        prefill(db, patients)
        if args.pg:  # the statistics autovacuum would gather on a store that grew over time
            analyzer = make_engine(db).execution_options(isolation_level="AUTOCOMMIT")
            with analyzer.connect() as conn:
                conn.execute(text("ANALYZE"))
            analyzer.engine.dispose()
        figures["prefill_s"] = round(time.perf_counter() - started, 1)
        alone_msgs, loaded_msgs = work / "alone.txt", work / "loaded.txt"
        write_messages(alone_msgs, count, "RA", seed=1)
        write_messages(loaded_msgs, count, "RB", seed=2)
        daemon, http_port = start_daemon(db, work)
        try:
            figures["ingest_alone"] = drive(daemon.port, alone_msgs)
            engine = make_engine(db)
            with engine.connect() as conn:  # PostgreSQL's ids have gaps: the rows themselves
                history_ids = list(
                    conn.execute(select(patient.c.id).where(patient.c.id > patients)).scalars()
                )
            engine.dispose()
            reader = Reader(http_port, patients, history_ids, seed=7)
            figures["reads_alone"] = reader.run(reads)
            stop = threading.Event()
            loaded: dict = {}
            during = Reader(http_port, patients, history_ids, seed=8)
            thread = threading.Thread(
                target=lambda: loaded.update(during.run(reads * 10, stop, args.read_rate))
            )
            thread.start()
            figures["ingest_with_reads"] = drive(daemon.port, loaded_msgs)
            stop.set()
            thread.join()
            figures["reads_while_ingesting"] = loaded
        finally:
            daemon.stop()
        alone = figures["ingest_alone"]["msgs_per_s"]
        figures["ingest_with_reads_share"] = round(
            figures["ingest_with_reads"]["msgs_per_s"] / alone, 3
        )
        figures["statements"] = statements(db, history_ids[len(history_ids) // 2])
    finally:
        if args.pg:
            drop_pg(db)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
