"""What the identity-vigilance desk costs: each page's time on a big store, and what a desk
user costs the MLLP path.

    python -m bench.desk_pages [--patients 200000] [--samples 20] [--count 600]

A store of --patients patients (bench/prefill.py, birth dates then spread at random so that
the doublon worklist holds what a real store would: about a hundred pairs) plus the messages
of one MLLP run; `pamfr serve` with the desk on; a signed-in client loads each page --samples
times, one after another (p50, p95; the overview's first load, which computes its whole-store
figures, is timed apart). Then the 8-connection MLLP throughput with nobody on the desk and
with a user who opened the desk before the run and loads a page every second during it, in
alternated rounds (A, B, B, A). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
from sqlalchemy import bindparam, select, update

from bench.__main__ import alternated, drive, wait_port, write_messages
from bench.driver import percentile
from bench.prefill import prefill
from pamfr.store.db import make_engine, upgrade
from pamfr.store.schema import patient

TOKEN = "bench-desk-0123456789abcdef"
PAGES = (
    "/desk/",
    "/desk/patients?nom=PREFILL123",
    "/desk/patients/{patient}",
    "/desk/messages",
    "/desk/messages?issue=AA&evenement=A28",
    "/desk/messages/{message}",
    "/desk/listes/collisions",
    "/desk/listes/doublons",
    "/desk/listes/provisoires",
    "/desk/listes/ins-retires",
    "/desk/listes/refus",
    "/desk/patients/{patient}/trace.csv",
)


def spread_birth_dates(url: str, seed: int = 23) -> None:
    """Birth dates at random over 1930-2020: prefill gives every patient the same one."""
    engine = make_engine(url)
    draw = random.Random(seed)
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(select(patient.c.id))]
        first = date(1930, 1, 1)
        conn.execute(
            update(patient)
            .where(patient.c.id == bindparam("pid"))
            .values(birth_date=bindparam("born")),
            [
                {"pid": pid, "born": (first + timedelta(days=draw.randrange(33_000))).isoformat()}
                for pid in ids
            ],
        )
    engine.dispose()


def start_desk(url: str, log: Path) -> tuple[subprocess.Popen, int, int]:
    env = {
        **os.environ,
        "PAMFR_LOG_LEVEL": "info",
        "PAMFR_HTTP_LISTEN": "127.0.0.1:0",
        "PAMFR_HTTP_TOKENS": json.dumps({"bench": TOKEN}),
        "PAMFR_DESK_ENABLED": "true",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pamfr", "serve", "--port", "0", "--db", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    port = wait_port(proc, log)
    http = int(re.search(r"HTTP port on [^ ]+:(\d+)", log.read_text()).group(1))
    return proc, port, http


def signed_in(http_port: int) -> httpx.Client:
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60)
    form = client.get("/desk/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    client.post("/desk/signin", data={"csrf": csrf, "token": TOKEN})
    return client


def time_pages(client: httpx.Client, samples: int, ids: dict[str, int]) -> dict:
    found = {}
    for template in PAGES:
        path = template.format(**ids)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            answer = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
        found[template] = {
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(percentile(times, 95), 1),
        }
    return found


def throughput(template: Path, work: Path, msgs: Path, with_user: bool, n: int) -> float:
    copy = work / f"run-{n}.db"
    shutil.copyfile(template, copy)
    proc, port, http = start_desk(f"sqlite:///{copy}", work / f"run-{n}.log")
    stop = threading.Event()

    def user() -> None:  # a person on the desk: a page a second, the overview among them
        client = signed_in(http)
        client.get("/desk/")  # the session begins before the run: its whole-store figures
        pages = ["/desk/", "/desk/messages", "/desk/listes/collisions", "/desk/patients/1"]
        i = 0
        while not stop.wait(1.0):
            client.get(pages[i % len(pages)])
            i += 1
        client.close()

    thread = threading.Thread(target=user, daemon=True)
    if with_user:
        thread.start()
        time.sleep(5)  # the user's first overview computed (on a store of 200,000: ~2 s)
    try:
        return drive(port, msgs, 8)["msgs_per_s"]
    finally:
        stop.set()
        if with_user:
            thread.join(30)
        proc.terminate()
        proc.wait(30)
        for leftover in work.glob(f"{copy.name}*"):
            leftover.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--count", type=int, default=600, help="messages per MLLP run")
    parser.add_argument("--rounds", type=int, default=1, help="of A, B, B, A runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pamfr-bench-desk-") as tmp:
        work = Path(tmp)
        template = work / "store.db"
        url = f"sqlite:///{template}"
        upgrade(url)
        prefill(url, args.patients)
        spread_birth_dates(url)
        msgs = work / "messages.txt"
        write_messages(msgs, args.count, "DESK")
        proc, port, http = start_desk(url, work / "pages.log")
        try:
            drive(port, msgs, 8)  # the messages, their history, a few AE: a store in use
            client = signed_in(http)
            found = client.get("/desk/patients?nom=PREFILL123").text
            card = re.search(r'href="/desk/patients/(\d+)"', found)
            listed = client.get("/desk/messages").text
            message = re.search(r'href="/desk/messages/(\d+)"', listed)
            ids = {"patient": int(card.group(1)), "message": int(message.group(1))}
            started = time.perf_counter()
            client.get("/desk/")
            first_overview = round((time.perf_counter() - started) * 1000, 1)
            pages = time_pages(client, args.samples, ids)
            client.close()
        finally:
            proc.terminate()
            proc.wait(30)
        msgs_more = work / "messages-more.txt"
        write_messages(msgs_more, args.count, "MORE")
        runs: dict[bool, list[float]] = {False: [], True: []}
        for n, with_user in enumerate(alternated(False, True, args.rounds)):
            runs[with_user].append(throughput(template, work, msgs_more, with_user, n))
    without, with_user = statistics.mean(runs[False]), statistics.mean(runs[True])
    print(
        json.dumps(
            {
                "patients": args.patients,
                "first_overview_ms": first_overview,
                "pages": pages,
                "mllp_8_connections_msgs_per_s": {
                    "nobody_on_the_desk": round(without, 1),
                    "a_desk_user": round(with_user, 1),
                    "cost_percent": round(100 * (1 - with_user / without), 1),
                    "runs": {"without": runs[False], "with": runs[True]},
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
