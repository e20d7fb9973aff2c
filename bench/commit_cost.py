"""What committing costs, without the daemon: the receiver's commit of prepared messages, in
batches of a given size, in this process, with every statement it sends counted and timed.

    python -m bench.commit_cost [--pg] [--count 1000] [--batch 3]

Prints milliseconds per message, overall and for each tenth of the run (a cost that grows with
the tables shows there), statements per message and the statements that cost most.
Statements sent in a psycopg pipeline (PostgreSQL batches) are not seen one by one: they show
as the difference between the commit time and the time in statements. On PostgreSQL it also
counts the round trips (libpq's protocol trace of the writer's connection: each time the
client sends and then waits for an answer) a batch and a message, and, when the server runs
on this machine, the CPU its backend spent a message.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from sqlalchemy import event

from bench.__main__ import drop_pg, fresh_db
from pamfr.hl7.frame import Inbound
from pamfr.hl7.samples import generate_mix
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine


def measure(url: str, count: int, batch: int) -> dict:
    engine = make_engine(url)
    receiver = Receiver(engine)
    texts = generate_mix(count, seed=3, prefix=f"C{uuid.uuid4().hex[:4].upper()}")
    prepared = [receiver.prepare(Inbound(t.encode())) for t in texts]
    statements: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, _cursor, _statement, _params, _context, _many) -> None:
        conn.info["started"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, _cursor, statement, _params, _context, _many) -> None:
        entry = statements[" ".join(statement.split())[:72]]
        entry[0] += 1
        entry[1] += time.perf_counter() - conn.info["started"]

    trace, backend = None, None
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:  # the pool's one connection, the one commit uses
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            trace = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read after the run)
            conn.connection.driver_connection.pgconn.trace(trace.fileno())
    backend_cpu = _cpu_seconds(backend)
    slices: list[float] = []  # seconds for each tenth of the messages
    started = slice_started = time.perf_counter()
    slice_size = max(batch, count // 10)
    for i in range(0, count, batch):
        receiver.commit(prepared[i : i + batch])
        if (i + batch) % slice_size < batch:
            now = time.perf_counter()
            slices.append(now - slice_started)
            slice_started = now
    elapsed = time.perf_counter() - started
    backend_cpu = _cpu_seconds(backend) - backend_cpu if backend else None
    engine.dispose()
    per_slice = [s / slice_size * 1000 for s in slices]
    result = {"elapsed": elapsed, "statements": dict(statements), "slices_ms": per_slice}
    if trace is not None:
        trace.seek(0)
        result["round_trips"], result["transactions"] = round_trips(trace)
        result["backend_cpu"] = backend_cpu
    return result


def round_trips(trace) -> tuple[int, int]:
    """Round trips (a run of messages from the client followed by the server's answer) and
    transactions ended (ReadyForQuery idle after a transaction) in a libpq trace."""
    trips = ended = 0
    last, in_transaction = "", False
    for line in trace:
        fields = line.split("\t")
        if len(fields) < 4:
            continue
        direction = fields[1]
        if direction == "B" and last == "F":
            trips += 1
        if direction == "B" and fields[3] == "ReadyForQuery":
            idle = fields[4].strip() == "I" if len(fields) > 4 else False
            ended += idle and in_transaction
            in_transaction = not idle
        last = direction
    return trips, ended


def _cpu_seconds(pid: int | None) -> float:
    """User and system CPU of a local process; 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--count", type=int, default=1000, help="messages (default 1000)")
    parser.add_argument("--batch", type=int, default=3, help="messages per commit (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pamfr-commit-") as tmp:
        url = fresh_db(Path(tmp), args.pg, "commit")
        try:
            result = measure(url, args.count, args.batch)
        finally:
            if args.pg:
                drop_pg(url)
    n = args.count
    stats = result["statements"]
    total = sum(c for c, _ in stats.values())
    in_statements = sum(t for _, t in stats.values())
    print(
        f"{'PostgreSQL' if args.pg else 'SQLite'}, batches of {args.batch}: "
        f"{result['elapsed'] / n * 1000:.2f} ms a message ({n / result['elapsed']:,.0f} msg/s), "
        f"{total / n:.2f} statements a message, {in_statements / n * 1000:.2f} ms of it in them"
    )
    if "round_trips" in result:
        trips, batches = result["round_trips"], -(-n // args.batch)
        cpu = result["backend_cpu"]
        print(
            f"  {trips / batches:.2f} round trips a batch, {trips / n:.2f} a message "
            f"({result['transactions']} transactions)"
            + (f"; backend CPU {cpu / n * 1000:.2f} ms a message" if cpu else "")
        )
    print(
        "  ms a message, by tenth of the run: " + " ".join(f"{m:.2f}" for m in result["slices_ms"])
    )
    for text, (calls, seconds) in sorted(stats.items(), key=lambda kv: -kv[1][1])[:12]:
        print(f"  {calls:6d} x {seconds / calls * 1000:6.3f} ms  {text}")


if __name__ == "__main__":
    main()
