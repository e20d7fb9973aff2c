"""Resource limits: more connections than allowed, slow and idle ones holding their
slot, a sender that never reads its ACKs. The daemon refuses the extra connections at once,
closes the slow ones after frame_timeout and the silent or babbling ones after idle_timeout,
keeps a well-behaved sender within its normal latency meanwhile, and stops reading from a
sender that does not read its answers instead of growing its memory."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import statistics
import threading
import time

from pamfr.transport.client import MLLPClient
from pamfr.transport.codec import encode_frame
from tests.helpers import parse_ack, start_daemon
from tests.reliability.common import a28, rss_kb, tree_rss_kb

MAX_CONNECTIONS = 20
FRAME_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0


async def _latencies(client: MLLPClient, prefix: str, stop, pace: float = 0.02) -> list[float]:
    """Send A28s one after the other until `stop()`; the ACK latency of each, all AA."""
    latencies = []
    n = 0
    while not stop():
        n += 1
        started = time.perf_counter()
        ack = parse_ack(await client.send(a28(f"{prefix}-{n}"), timeout=30))
        latencies.append(time.perf_counter() - started)
        assert ack.code == "AA", ack.raw
        await asyncio.sleep(pace)
    return latencies


async def _closed_after(reader: asyncio.StreamReader, since: float, limit: float) -> float:
    """Seconds from `since` until the server closed the connection (EOF or reset)."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    return time.monotonic() - since


async def _attacker(kind: str, port: int, stop: asyncio.Event) -> float:
    """One connection that holds a slot without ever completing a frame; how long it lived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    closed = asyncio.create_task(_closed_after(reader, opened, 30))

    async def trickle() -> None:
        try:
            if kind == "slowloris":  # a frame started, one byte every 300 ms
                writer.write(b"\x0bMSH|^~\\&|")
                while not stop.is_set():
                    await asyncio.sleep(0.3)
                    writer.write(b"x")
                    await writer.drain()
            elif kind == "restarting":  # a new start block before each timeout
                while not stop.is_set():
                    writer.write(b"\x0bMSH|")
                    await writer.drain()
                    await asyncio.sleep(0.5)
            elif kind == "babbling":  # bytes outside any frame, never a frame
                while not stop.is_set():
                    writer.write(b"hello? ")
                    await writer.drain()
                    await asyncio.sleep(0.3)
            # "idle": says nothing
        except (ConnectionError, OSError):
            pass  # closed by the server: what we wait for

    trickling = asyncio.create_task(trickle())
    try:
        return await closed
    finally:
        trickling.cancel()
        writer.transport.abort()


async def _extra(port: int) -> tuple[float, bytes]:
    """A connection over the limit: sends a message, must be closed at once, unanswered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    try:
        writer.write(encode_frame(a28("EXTRA")))
        await writer.drain()
    except ConnectionError:
        pass
    try:
        async with asyncio.timeout(5):
            answer = await reader.read()
    except ConnectionResetError:
        answer = b""
    writer.transport.abort()
    return time.monotonic() - opened, answer


def _opened(daemon) -> int:
    return daemon.log().count(" opened")


def test_connection_flood_slow_and_idle_peers_do_not_hurt_a_good_sender(sqlite_url, tmp_path):
    daemon = start_daemon(
        sqlite_url,
        tmp_path / "serve.log",
        env={
            "PAMFR_SERVER_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "PAMFR_SERVER_MAX_CONNECTIONS_PER_PEER": str(MAX_CONNECTIONS),  # all from 127.0.0.1
            "PAMFR_SERVER_FRAME_TIMEOUT": str(FRAME_TIMEOUT),
            "PAMFR_SERVER_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
        },
    )
    kinds = ["slowloris"] * 7 + ["restarting"] * 4 + ["idle"] * 4 + ["babbling"] * 4

    async def scenario():
        port = daemon.port
        good = await MLLPClient.connect("127.0.0.1", port)
        await _latencies(good, "WARM", _for(1))
        baseline = await _latencies(good, "BASE", _for(3))

        stop = asyncio.Event()
        attackers = [asyncio.create_task(_attacker(k, port, stop)) for k in kinds]
        limit = time.monotonic() + 5
        while _opened(daemon) < MAX_CONNECTIONS:  # every slot taken, as the daemon sees it
            assert time.monotonic() < limit, daemon.log()[-2000:]
            await asyncio.sleep(0.02)
        attacked = time.monotonic()
        under_attack = asyncio.create_task(
            _latencies(good, "ATTACK", lambda: all(a.done() for a in attackers))
        )
        extras = await asyncio.gather(*(_extra(port) for _ in range(2 * MAX_CONNECTIONS)))
        lived = await asyncio.gather(*attackers)
        stop.set()
        during = await under_attack
        after = await _latencies(good, "AFTER", _for(1))
        # the slots are free again
        async with await MLLPClient.connect("127.0.0.1", port) as again:
            assert parse_ack(await again.send(a28("AGAIN"), timeout=10)).code == "AA"
        await good.close()
        return baseline, during, after, extras, lived, time.monotonic() - attacked

    try:
        baseline, during, after, extras, lived, attack_span = asyncio.run(
            asyncio.wait_for(scenario(), 60)
        )
        assert daemon.proc.poll() is None
    finally:
        code = daemon.stop()
    assert code == 0

    refused_after = [t for t, _ in extras]
    assert all(answer == b"" for _, answer in extras), "a connection over the limit was served"
    assert max(refused_after) < 1.0, refused_after
    by_kind: dict[str, list[float]] = {}
    for kind, seconds in zip(kinds, lived, strict=True):
        by_kind.setdefault(kind, []).append(seconds)
    for kind in ("slowloris", "restarting"):
        assert all(FRAME_TIMEOUT - 0.1 <= s < FRAME_TIMEOUT + 1.5 for s in by_kind[kind]), by_kind
    for kind in ("idle", "babbling"):
        assert all(IDLE_TIMEOUT - 0.1 <= s < IDLE_TIMEOUT + 1.5 for s in by_kind[kind]), by_kind
    log = daemon.log()
    assert log.count("refused:") == len(extras)
    assert log.count("frame not finished within") == len(by_kind["slowloris"]) + len(
        by_kind["restarting"]
    )

    p50 = statistics.median(baseline)
    bound = 5 * p50 + 0.2

    def ms(values: list[float]) -> str:
        return f"p50 {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"

    print(
        f"\nconnections: {MAX_CONNECTIONS} held (1 good, {len(kinds)} attackers), "
        f"{len(extras)} extra refused within {max(refused_after) * 1000:.0f} ms; lived "
        + ", ".join(f"{k} {min(v):.2f}-{max(v):.2f}s" for k, v in by_kind.items())
        + f"\ngood sender: baseline {len(baseline)} msgs {ms(baseline)}; under attack "
        f"({attack_span:.1f}s) {len(during)} msgs {ms(during)}; after {ms(after)}; "
        f"bound {bound * 1000:.0f} ms"
    )
    assert len(during) >= 20
    # One sample may fall while this test's own event loop opens the 40 extra connections; an
    # attacker that held the daemon up would slow many, by its frame or idle time-out (2-3 s).
    slow = [d for d in during if d >= bound]
    assert len(slow) <= 1 and max(during) < 1.0, (
        "the well-behaved sender was slowed down by the attackers"
    )


def _for(seconds: float):
    """A stop condition: true once `seconds` have passed from now."""
    until = time.monotonic() + seconds
    return lambda: time.monotonic() > until


def test_pipelining_sender_is_not_buffered(sqlite_url, tmp_path):
    """A sender writes 50 MB of frames as fast as it can and never reads the ACKs: the daemon
    handles one frame at a time and reads no further meanwhile, so the sender's writes stall in
    the kernel buffers while the daemon's memory stays flat; another sender is served."""
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log")
    target = 50 * 1024 * 1024
    frame = encode_frame(a28("PIPE"))  # the same message: duplicates after the first
    chunk = frame * (256 * 1024 // len(frame))
    progress: list[tuple[float, int]] = []  # (time, bytes written so far)
    done = threading.Event()

    def pipeline() -> None:
        with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
            sock.settimeout(0.2)
            written, view = 0, memoryview(chunk)
            deadline = time.monotonic() + 6
            while written < target and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    written += sock.send(view[written % len(chunk) :])
                progress.append((time.monotonic(), written))
            done.set()
        # closing with ACKs unread resets the connection: the daemon drops it

    try:
        base = rss_kb(daemon.proc.pid)
        base_tree = tree_rss_kb(daemon.proc.pid)
        thread = threading.Thread(target=pipeline)
        thread.start()
        samples = []
        while not done.wait(0.1):
            samples.append(rss_kb(daemon.proc.pid))

        async def other_sender():
            async with await MLLPClient.connect("127.0.0.1", daemon.port) as client:
                return await _latencies(client, "OTHER", _for(1))

        time.sleep(0.5)
        other = asyncio.run(other_sender())
        thread.join(10)
        peak_tree = tree_rss_kb(daemon.proc.pid)
        assert daemon.proc.poll() is None
    finally:
        code = daemon.stop()
    assert code == 0
    log = daemon.log()
    handled = sum(1 for line in log.splitlines() if "control_id=PIPE " in line)
    written = progress[-1][1]
    t_end = progress[-1][0]
    last_2s = written - next(w for t, w in progress if t >= t_end - 2)
    print(
        f"\npipelining sender: {written / 2**20:.1f} MiB written of {target / 2**20:.0f} MiB tried"
        f" in 6 s ({last_2s / 1e6:.2f} MB in the last 2 s), {handled} frames"
        f" ({handled * len(frame) / 1e6:.1f} MB) answered; daemon RSS {base // 1024} MB before,"
        f" max {max(samples) // 1024} MB meanwhile (with parse workers {base_tree // 1024} ->"
        f" {peak_tree // 1024} MB); another sender meanwhile: {len(other)} AA, max"
        f" {max(other) * 1000:.0f} ms"
    )
    assert written < target, "the daemon read a whole 50 MB it could not handle yet"
    # What the daemon took in the last 2 s is what it handled, give or take the kernel buffers.
    assert last_2s < 8 * 1024 * 1024
    assert max(samples) - base < 30 * 1024, "the daemon buffered the pipelined frames"
    assert max(other) < 1.0


class _BigAnswers:
    """A handler that answers every frame at once with 64 KiB."""

    def __init__(self) -> None:
        self.frames = 0

    async def on_frame(self, payload: bytes, peer) -> bytes:
        self.frames += 1
        return b"A" * 65536

    async def on_oversized(self, head: bytes, size: int, peer) -> bytes:
        return b"too big"


def test_server_stops_reading_a_peer_that_does_not_read_its_answers(caplog):
    """The transport alone, with answers big enough to fill the socket buffers quickly: once
    the peer's unread answers back up, the server stops reading it (its writes stall) and
    closes it after idle_timeout, with its own buffers bounded."""
    from pamfr.transport.server import MLLPServer, ServerLimits

    handler = _BigAnswers()
    result: dict[str, float] = {}

    async def scenario():
        server = MLLPServer(handler, port=0, limits=ServerLimits(idle_timeout=2))
        await server.start()
        loop = asyncio.get_running_loop()

        def flood() -> None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.settimeout(0.2)
            frames = encode_frame(b"MSH|x") * 10_000
            written, started, last = 0, time.monotonic(), time.monotonic()
            try:
                while time.monotonic() - started < 10:
                    try:
                        written += sock.send(frames)
                        last = time.monotonic()
                    except TimeoutError:
                        pass
            except OSError:  # closed by the server
                result["closed_after"] = time.monotonic() - last
            result["written"] = written
            result["stalled_after"] = last - started
            sock.close()

        await loop.run_in_executor(None, flood)
        await server.close()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with caplog.at_level("WARNING", logger="pamfr.transport"):
        asyncio.run(asyncio.wait_for(scenario(), 30))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(
        f"\npeer not reading: {handler.frames} frames answered ({handler.frames * 64} KiB of"
        f" answers) then the server stopped reading; the peer's writes stalled after"
        f" {result['stalled_after']:.2f}s with {result['written'] / 1e6:.1f} MB written; closed"
        f" {result.get('closed_after', -1):.1f}s later; test process RSS +{grown // 1024} MB"
    )
    assert "closed_after" in result, "the server never gave up on a peer not reading"
    assert 0.5 < result["closed_after"] < 4
    assert handler.frames < 1000
    assert any("not reading its answers" in r.getMessage() for r in caplog.records)
    assert grown < 50 * 1024
