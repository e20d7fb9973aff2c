"""Webhook delivery against the MLLP path: ACK latency with no subscriber and with a
subscriber that answers in 2 s, and events delivered per second to a fast subscriber.

    python -m bench.webhook_latency [--count N] [--rate R] [--pg]

Each figure on a fresh store and a fresh `pamfr serve`, driven by bench.driver from another
process (one connection, R messages a second). The subscribers are HTTP servers on 127.0.0.1
in this process. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.__main__ import drive, drop_pg, fresh_db, start_serve, write_messages
from pamfr.feed.store import last_event_id
from pamfr.store.db import make_engine

SECRET = "bench-secret-0123456789abcdef0123"  # 32 bytes at least, as pamfr requires


class Subscriber:
    """Answers 204 after `delay` seconds; counts the distinct events it was sent."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.ids: set[int] = set()
        self.first_at = self.last_at = 0.0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if outer.delay:
                    time.sleep(outer.delay)
                with lock:
                    outer.ids.add(int(self.headers["X-Pamfr-Event-Id"]))
                    outer.last_at = time.perf_counter()
                    outer.first_at = outer.first_at or outer.last_at
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(work: Path, name: str, url: str | None) -> Path:
    path = work / f"{name}.toml"
    text = "[feed]\npoll_interval = 0.2\n"
    if url is not None:
        text += f'\n[[webhooks]]\nname = "{name}"\nurl = "{url}"\nsecret = "{SECRET}"\n'
    path.write_text(text)
    return path


def ack_latency(work: Path, pg: bool, msgs: Path, rate: float, name: str, url: str | None):
    db = fresh_db(work, pg, name)
    daemon = start_serve(db, work / f"{name}.log", "--config", str(config(work, name, url)))
    try:
        result = drive(daemon.port, msgs, 1, rate)
    finally:
        daemon.stop()
    return db, result


def delivery_rate(work: Path, db: str) -> dict:
    """A new subscriber on a store holding events: it starts at the beginning of the feed."""
    engine = make_engine(db)
    with engine.connect() as conn:
        last = last_event_id(conn)
    engine.dispose()
    sink = Subscriber(0.0)
    daemon = start_serve(db, work / "fast.log", "--config", str(config(work, "fast", sink.url)))
    try:
        deadline = time.monotonic() + 600
        while len(sink.ids) < last and time.monotonic() < deadline:
            time.sleep(0.05)
        first_to_last = sink.last_at - sink.first_at
    finally:
        daemon.stop()
        sink.close()
    return {
        "events": last,
        "delivered": len(sink.ids),
        "seconds_first_to_last": round(first_to_last, 2),
        "events_per_s": round((len(sink.ids) - 1) / first_to_last, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="messages per ACK latency run")
    parser.add_argument("--rate", type=float, default=50.0, help="messages a second offered")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pamfr-bench-webhook-"))
    msgs = work / "messages.txt"
    write_messages(msgs, args.count, "W")
    slow = Subscriber(2.0)
    figures: dict = {"count": args.count, "rate": args.rate, "store": "pg" if args.pg else "sqlite"}
    dbs = []
    try:
        db, plain = ack_latency(work, args.pg, msgs, args.rate, "none", None)
        dbs.append(db)
        db, slowed = ack_latency(work, args.pg, msgs, args.rate, "slow", slow.url)
        dbs.append(db)
        figures["ack_latency_ms"] = {
            "no_subscriber": plain["latency_ms"],
            "subscriber_answering_in_2s": slowed["latency_ms"],
        }
        figures["slow_subscriber_events_delivered_meanwhile"] = len(slow.ids)
        figures["fast_subscriber"] = delivery_rate(work, dbs[0])
    finally:
        slow.close()
        if args.pg:
            for db in dbs:
                drop_pg(db)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
