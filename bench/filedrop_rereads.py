"""What an incomplete file costs the file door: an inbox holding one file without its last
CR, watched with the default [filedrop] settings for some seconds.

    python -m bench.filedrop_rereads [--size-mb N] [--seconds S]

The real FileDropWatcher and receiver in this process, on a fresh SQLite store. Prints the
bytes this process read meanwhile (/proc/self/io rchar: every read, all threads) and its
peak resident memory (VmHWM, the file's own bytes written first included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from pamfr.ingest.filedrop import FileDropWatcher
from pamfr.path.pipeline import AsyncReceiver
from pamfr.path.receiver import Receiver
from pamfr.settings.config import FiledropSettings
from pamfr.store.db import make_engine, upgrade

HEAD = b"MSH|^~\\&|GAM|HOP|PAMFR|HOP|20250101||ADT^A28|CUT-1|P|2.5\rPID|1||"


def _proc(name: str, key: str) -> int:
    with open(f"/proc/self/{name}") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{key}:"))


async def measure(root: Path, size: int, seconds: float) -> dict[str, float]:
    url = f"sqlite:///{root / 'pamfr.db'}"
    upgrade(url)
    inbox = root / "in"
    inbox.mkdir()
    (inbox / "a-cut.hl7").write_bytes(HEAD + b"9" * size)  # no final CR: incomplete
    engine = make_engine(url)
    handler = AsyncReceiver(Receiver(engine), door="file")
    watcher = FileDropWatcher(handler, FiledropSettings(dirs=[str(inbox)]))
    before = _proc("io", "rchar")
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(seconds)
    watcher.stop()
    await task
    read = _proc("io", "rchar") - before
    handler.close()
    engine.dispose()
    return {
        "file_mb": round(size / 1e6, 1),
        "seconds": seconds,
        "read_mb": round(read / 1e6, 1),
        "peak_rss_mb": round(_proc("status", "VmHWM") / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=60, help="the file's size (MB)")
    parser.add_argument("--seconds", type=float, default=12.0, help="how long it is watched")
    args = parser.parse_args()
    if args.size_mb < 1 or args.seconds <= 0:
        parser.error("--size-mb must be 1 or more and --seconds more than 0")
    with tempfile.TemporaryDirectory() as root:
        figures = asyncio.run(measure(Path(root), args.size_mb * 1_000_000, args.seconds))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
