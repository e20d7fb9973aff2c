"""pamfr benchmark: a real `pamfr serve` on a fresh store, driven over MLLP from another process.

    python -m bench [--quick] [--pg] [--http] [--skip-memory] [--skip-big-store] [--out FILE]

Prints one table; see bench/README.md for what each line means.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.prefill import prefill
from bench.reference import hl7apy_full_parse
from pamfr.hl7.samples import generate_mix
from pamfr.store.db import upgrade

PG_ADMIN = os.environ.get("PAMFR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass
class Profile:
    throughput_count: int  # messages per throughput figure
    latency_count: int  # messages at 50 msg/s
    rss_count: int  # messages for the memory figure
    big_store: int  # patients prefilled for the "big store" figure
    small_store: int
    reference_count: int
    rounds: int  # of alternated runs (A, B, B, A) where two figures are compared


# --http: each daemon opens its HTTP port and is scraped (/metrics, /readyz) this often.
SCRAPE_INTERVAL = 1.0
HTTP = {"on": False}


QUICK = Profile(600, 500, 3000, 200_000, 10_000, 150, 1)
FULL = Profile(4000, 3000, 100_000, 1_000_000, 10_000, 500, 3)


def write_messages(path: Path, count: int, prefix: str, seed: int = 2575) -> list[str]:
    messages = list(generate_mix(count, seed=seed, prefix=prefix))
    with open(path, "wb") as f:
        for m in messages:
            f.write(m.encode("utf-8") + b"\n")
    return messages


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and all its descendants (forkserver, parse workers), in KiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+)", status)
        total += int(found.group(1)) if found else 0
    return total


@dataclass
class Daemon:
    proc: subprocess.Popen
    port: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    http_port: int | None = None
    scrapes: int = 0
    _stop_scraping: threading.Event = field(default_factory=threading.Event)
    _scraper: threading.Thread | None = None

    def start_scraping(self) -> None:
        """As Prometheus and a health check would, but every SCRAPE_INTERVAL."""
        if self.http_port is None:
            return

        def scrape() -> None:
            while not self._stop_scraping.wait(SCRAPE_INTERVAL):
                for path in ("/metrics", "/readyz"):
                    url = f"http://127.0.0.1:{self.http_port}{path}"
                    with urllib.request.urlopen(url, timeout=30) as answer:
                        answer.read()
                self.scrapes += 1

        self._scraper = threading.Thread(target=scrape, daemon=True)
        self._scraper.start()

    def stop_scraping(self) -> None:
        self._stop_scraping.set()
        if self._scraper is not None:
            self._scraper.join()

    def sample_rss(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            self.samples.append((time.monotonic(), tree_rss_kb(self.proc.pid)))

    def stop(self) -> None:
        self.stop_scraping()
        self.proc.terminate()
        self.proc.wait(120)


def start_serve(url: str, log: Path, *extra: str) -> Daemon:
    if HTTP["on"]:
        extra = (*extra, "--http", "127.0.0.1:0")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pamfr", "serve", "--port", "0", "--db", url, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PAMFR_LOG_LEVEL": "info"},  # as in production
        )
    daemon = Daemon(proc, wait_port(proc, log))
    if HTTP["on"]:  # logged before the MLLP listener's line
        found = re.search(r"HTTP port on [^ ]+:(\d+)", log.read_text(errors="replace"))
        assert found, log.read_text()
        daemon.http_port = int(found.group(1))
        daemon.start_scraping()
    return daemon


def wait_port(proc: subprocess.Popen, log: Path) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"listening on [^ ]+:(\d+)", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"server did not start: {log.read_text()}")


def drive(port: int, messages: Path, connections: int, rate: float | None = None) -> dict:
    cmd = [
        sys.executable, "-m", "bench.driver", "--port", str(port),
        "--messages", str(messages), "--connections", str(connections),
    ]  # fmt: skip
    if rate:
        cmd += ["--rate", str(rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def fresh_db(work: Path, pg: bool, name: str) -> str:
    if not pg:
        url = f"sqlite:///{work / (name + '.db')}"
    else:
        from sqlalchemy import create_engine, text

        db = f"pamfr_bench_{name}_{uuid.uuid4().hex[:6]}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
        admin.dispose()
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    upgrade(url)
    return url


def drop_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def serve_and_drive(work: Path, url: str, msgs: Path, connections: int, rate=None) -> dict:
    daemon = start_serve(url, work / f"serve-{uuid.uuid4().hex[:6]}.log")
    try:
        return drive(daemon.port, msgs, connections, rate)
    finally:
        daemon.stop()


def echo_ceiling(work: Path, msgs: Path) -> tuple[dict, dict]:
    log = work / "echo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.echo_server"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        port = wait_port(proc, log)
        return drive(port, msgs, 1), drive(port, msgs, 8)
    finally:
        proc.terminate()
        proc.wait(30)


def replay_local(url: str, path: Path, work: Path) -> dict:
    """`pamfr replay --local` on the message set; messages/second from its JSON report."""
    folder = work / "replay-set"
    folder.mkdir(exist_ok=True)
    with open(path, "rb") as src, open(folder / "set.hl7", "wb") as dst:
        dst.write(src.read())
    report = work / "replay-report.json"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pamfr", "replay", str(folder), "--local", "--db", url,
         "--report", str(report), "--allow-errors"],
        capture_output=True, check=True, env={**os.environ, "PAMFR_LOG_LEVEL": "warning"},
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    data = json.loads(report.read_text())
    return {
        "count": data["messages"],
        "msgs_per_s": data["messages_per_s"],  # pamfr's own figure: excludes start-up
        "wall_msgs_per_s": data["messages"] / elapsed,
        "codes": data["ack_codes"],
    }


def big_store(work: Path, msgs: Path, profile: Profile) -> dict:
    """Throughput on a store prefilled with few and with many patients: each store is filled
    once, then copied for each run, in alternated rounds."""
    templates = {}
    for label, size in (("store_small", profile.small_store), ("store_big", profile.big_store)):
        step(f"prefilling a store with {size:,} patients")
        url = fresh_db(work, False, label)
        prefill(url, size)
        templates[label] = (size, Path(url.removeprefix("sqlite:///")))
    runs: dict[str, list[dict]] = {"store_small": [], "store_big": []}
    order = alternated("store_small", "store_big", profile.rounds)
    for n, label in enumerate(order):
        size, template = templates[label]
        step(f"store of {size:,} patients, 8 connections ({n + 1} of {len(order)})")
        copy = work / f"{label}-{n}.db"
        for suffix in ("", "-wal"):  # the WAL is empty once prefill's engine is closed
            if Path(f"{template}{suffix}").exists():
                shutil.copyfile(f"{template}{suffix}", f"{copy}{suffix}")
        runs[label].append(serve_and_drive(work, f"sqlite:///{copy}", msgs, 8))
        for leftover in work.glob(f"{copy.name}*"):
            leftover.unlink()
    return {
        label: {"patients": templates[label][0], **mean_run(each)} for label, each in runs.items()
    }


def alternated(a: str | bool, b: str | bool, rounds: int) -> list:
    """a, b, b, a, once per round: the machine's speed drifts over minutes, and this order
    gives both figures the same average moment."""
    return [x for _ in range(rounds) for x in (a, b, b, a)]


def memory_run(work: Path, url: str, count: int, prefix: str) -> dict:
    msgs = work / "rss.txt"
    write_messages(msgs, count, prefix, seed=7)
    daemon = start_serve(url, work / "serve-rss.log")
    stop = threading.Event()
    sampler = threading.Thread(target=daemon.sample_rss, args=(stop,), daemon=True)
    sampler.start()
    try:
        result = drive(daemon.port, msgs, 8)
    finally:
        stop.set()
        sampler.join()
        samples = daemon.samples
        daemon.stop()
    t0, t1 = samples[0][0], samples[-1][0]
    mid = [rss for t, rss in samples if t >= (t0 + t1) / 2]
    peak = max(rss for _, rss in samples)
    return {
        "count": count,
        "msgs_per_s": result["msgs_per_s"],
        "peak_rss_mb": peak / 1024,
        "growth_second_half_pct": (mid[-1] - mid[0]) / mid[0] * 100 if mid else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts: runs in under 5 minutes"
    )
    parser.add_argument("--pg", action="store_true", help="also measure PostgreSQL (8 connections)")
    parser.add_argument(
        "--http",
        action="store_true",
        help=f"daemons open their HTTP port, scraped every {SCRAPE_INTERVAL:g} s during the runs",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-big-store", action="store_true")
    parser.add_argument("--out", help="also write the figures as JSON to this file")
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    HTTP["on"] = args.http
    results: dict = {
        "profile": "quick" if args.quick else "full",
        "cpus": os.cpu_count(),
        "http": args.http,
    }

    with tempfile.TemporaryDirectory(prefix="pamfr-bench-") as tmp:
        work = Path(tmp)
        run_id = uuid.uuid4().hex[:4].upper()
        msgs = work / "set.txt"
        texts = write_messages(msgs, profile.throughput_count, f"B{run_id}")

        step("hl7apy full-parse reference (one core)")
        results["hl7apy"] = hl7apy_full_parse(texts[: profile.reference_count])
        step("constant-ACK MLLP server (transport ceiling)")
        results["echo_1"], results["echo_8"] = echo_ceiling(work, msgs)
        step("pamfr serve, SQLite durable, 1 connection")
        results["sqlite_1"] = serve_and_drive(work, fresh_db(work, False, "s1"), msgs, 1)
        if not args.pg:
            step("pamfr serve, SQLite durable, 8 connections")
            results["sqlite_8"] = serve_and_drive(work, fresh_db(work, False, "s8"), msgs, 8)
        else:
            runs: dict[str, list[dict]] = {"sqlite_8": [], "pg_8": []}
            order = alternated(False, True, profile.rounds)  # SQLite, PostgreSQL, ...
            for n, pg in enumerate(order):
                engine_name = "PostgreSQL" if pg else "SQLite durable"
                step(f"pamfr serve, {engine_name}, 8 connections ({n + 1} of {len(order)})")
                url = fresh_db(work, pg, f"{'p' if pg else 's'}8{n}")
                try:
                    runs["pg_8" if pg else "sqlite_8"].append(serve_and_drive(work, url, msgs, 8))
                finally:
                    if pg:
                        drop_pg(url)
            for key, each in runs.items():
                results[key] = mean_run(each)
        step("ACK latency at 50 messages/second, 1 connection")
        lat_msgs = work / "latency.txt"
        write_messages(lat_msgs, profile.latency_count, f"L{run_id}", seed=11)
        results["latency_50"] = serve_and_drive(work, fresh_db(work, False, "lat"), lat_msgs, 1, 50)
        step("replay --local")
        results["replay_local"] = replay_local(fresh_db(work, False, "rep"), msgs, work)
        if not args.skip_big_store:
            results.update(big_store(work, msgs, profile))
        if not args.skip_memory:
            step(f"memory: {profile.rss_count:,} messages over 8 connections")
            results["memory"] = memory_run(
                work, fresh_db(work, False, "rss"), profile.rss_count, f"M{run_id}"
            )

    print_table(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def mean_run(runs: list[dict]) -> dict:
    """Runs of the same figure as one: mean throughput, the ACK codes added, each run kept."""
    codes: dict[str, int] = {}
    for r in runs:
        for code, n in r["codes"].items():
            codes[code] = codes.get(code, 0) + n
    return {
        "msgs_per_s": sum(r["msgs_per_s"] for r in runs) / len(runs),
        "codes": codes,
        "runs": runs,
    }


def step(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def print_table(r: dict) -> None:
    ref = r["hl7apy"]["msgs_per_s"]
    ref_ms = r["hl7apy"]["median_ms"]
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, value: str, ratio: str = "", target: str = "") -> None:
        rows.append((label, value, ratio, target))

    add("hl7apy full parse, 1 core (reference)", f"{ref:,.0f} msg/s", "1.00 x",
        f"median {ref_ms:.2f} ms")  # fmt: skip
    add("constant-ACK MLLP server, 1 / 8 connections",
        f"{r['echo_1']['msgs_per_s']:,.0f} / {r['echo_8']['msgs_per_s']:,.0f} msg/s")  # fmt: skip
    for key, label, target in (
        ("sqlite_1", "pamfr serve, SQLite FULL, 1 connection", ">= 1.0 x"),
        ("sqlite_8", "pamfr serve, SQLite FULL, 8 connections", ">= 2.5 x"),
        ("replay_local", "replay --local", ">= 2.5 x"),
    ):
        v = r[key]["msgs_per_s"]
        add(label, f"{v:,.0f} msg/s", f"{v / ref:.2f} x", target)
    if "pg_8" in r:
        v = r["pg_8"]["msgs_per_s"]
        add("pamfr serve, PostgreSQL, 8 connections", f"{v:,.0f} msg/s",
            f"{v / r['sqlite_8']['msgs_per_s']:.0%} of SQLite", ">= 80%")  # fmt: skip
        for key, name in (("sqlite_8", "SQLite"), ("pg_8", "PostgreSQL")):
            each = " / ".join(f"{run['msgs_per_s']:,.0f}" for run in r[key]["runs"])
            add(f"  (8 connections, {name}: each run)", f"{each} msg/s")
    lat = r["latency_50"]["latency_ms"]
    add("ACK latency at 50 msg/s, p50 / p99 / max",
        f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f} ms",
        f"p99 = {lat['p99'] / ref_ms:.2f} x parse", "<= 4 x")  # fmt: skip
    if "store_big" in r:
        big, small = r["store_big"], r["store_small"]
        add(f"store of {big['patients']:,} vs {small['patients']:,} patients",
            f"{big['msgs_per_s']:,.0f} vs {small['msgs_per_s']:,.0f} msg/s",
            f"{big['msgs_per_s'] / small['msgs_per_s']:.0%}", ">= 90%")  # fmt: skip
        for key, name in (("store_small", "small store"), ("store_big", "big store")):
            each = " / ".join(f"{run['msgs_per_s']:,.0f}" for run in r[key]["runs"])
            add(f"  ({name}: each run)", f"{each} msg/s")
    if "memory" in r:
        m = r["memory"]
        add(f"peak RSS after {m['count']:,} messages (daemon + workers)",
            f"{m['peak_rss_mb']:.0f} MB", f"growth {m['growth_second_half_pct']:+.1f}% 2nd half",
            "< 250 MB, < 10%")  # fmt: skip
    codes: dict[str, int] = {}
    for key in ("sqlite_1", "sqlite_8", "pg_8", "latency_50"):
        for code, n in r.get(key, {}).get("codes", {}).items():
            codes[code] = codes.get(code, 0) + n
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    header = ("figure", "measured", "ratio", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    http = f", HTTP port on, scraped every {SCRAPE_INTERVAL:g} s" if r.get("http") else ""
    print(f"\nACK codes over the runs: {codes}   ({r['profile']} profile, {r['cpus']} CPUs{http})")


if __name__ == "__main__":
    main()
