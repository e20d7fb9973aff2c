"""The daemon's parse worker processes: real processes, real sockets, real kills."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time

import pytest

from pamfr.hl7.frame import Inbound
from pamfr.hl7.samples import Person, message
from pamfr.path.parse_workers import ParseWorkers, WorkerDied
from pamfr.path.pipeline import AsyncReceiver
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine
from tests.helpers import process_alive


def _workers(pool: ParseWorkers) -> list[int]:
    return [w.process.pid for w in pool._workers]


async def _with_pool(test, size: int = 2):
    pool = ParseWorkers(size, time.sleep, (0,))
    await pool.start()
    try:
        return await test(pool)
    finally:
        pool.close()


def test_requests_ready_together_go_to_different_workers():
    async def test(pool):
        # The second request goes to the worker with nothing in hand, not behind the first.
        pids = await asyncio.gather(*(pool.run(_sleep_then_pid, 0.5) for _ in range(2)))
        return pids, _workers(pool)

    pids, workers = asyncio.run(_with_pool(test))
    assert sorted(pids) == sorted(workers)


def test_an_exception_in_the_worker_is_raised_to_the_caller():
    async def test(pool):
        with pytest.raises(ValueError, match="invalid literal"):
            await pool.run(int, "not a number")
        return await pool.run(int, "42")

    assert asyncio.run(_with_pool(test)) == 42


def test_a_worker_killed_mid_request_fails_that_request_and_is_replaced():
    async def test(pool):
        pending = asyncio.ensure_future(pool.run(_sleep_then_pid, 5))
        await asyncio.sleep(0.3)
        busy = [w for w in pool._workers if w.waiting]
        assert len(busy) == 1
        os.kill(busy[0].process.pid, signal.SIGKILL)
        with pytest.raises(WorkerDied):
            await asyncio.wait_for(pending, 5)
        answers = await asyncio.gather(*(pool.run(_sleep_then_pid, 0.2) for _ in range(2)))
        workers = _workers(pool)
        return busy[0].process.pid, answers, workers, [process_alive(p) for p in workers]

    killed, answers, workers, alive = asyncio.run(_with_pool(test))
    assert killed not in workers
    assert len(set(workers)) == 2 and all(alive)
    assert set(answers) <= set(workers)


def test_an_answer_that_does_not_unpickle_fails_its_caller_and_the_worker_is_replaced(caplog):
    async def test(pool):
        first = _workers(pool)
        with pytest.raises(WorkerDied):
            await asyncio.wait_for(pool.run(_unloadable_answer), 5)
        answers = await asyncio.gather(*(pool.run(_sleep_then_pid, 0.1) for _ in range(3)))
        return first, answers, _workers(pool)

    first, answers, workers = asyncio.run(_with_pool(test))
    assert len(set(first) - set(workers)) == 1  # the one that sent it was replaced
    assert set(answers) <= set(workers)
    assert "unreadable answer (TypeError)" in caplog.text


def test_a_request_that_does_not_pickle_leaves_later_answers_with_their_callers():
    async def test(pool):
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            await pool.run(_sleep_then_pid, lambda: 0)
        return await asyncio.gather(*(pool.run(abs, -n) for n in range(6)))

    assert asyncio.run(_with_pool(test)) == list(range(6))


def test_close_from_another_thread_stops_the_workers_quietly(caplog):
    async def test(pool):
        workers = _workers(pool)
        await asyncio.to_thread(pool.close)
        await asyncio.sleep(0.2)  # the listeners see the end of their sockets
        with pytest.raises(RuntimeError, match="closed"):
            await pool.run(abs, -1)
        return workers

    workers = asyncio.run(_with_pool(test))
    assert workers and not any(process_alive(p) for p in workers)
    assert "ERROR" not in [r.levelname for r in caplog.records]


def test_the_receiver_answers_after_its_parse_workers_were_killed(sqlite_url):
    async def test():
        handler = AsyncReceiver(Receiver(make_engine(sqlite_url)), parse_workers=2)
        await handler.start()
        try:
            for w in handler._processes._workers:
                os.kill(w.process.pid, signal.SIGKILL)
                w.process.join(5)  # dead, and the event loop has not read the end yet
            raw = message("A28", Person(ipp="KILLED1"), "CTRL-KILLED-1").encode()
            return await handler.receive(Inbound(raw, "test", "mllp"))
        finally:
            handler.close()

    outcome = asyncio.run(test())
    assert outcome.code == "AA"
    assert outcome.message_id is not None


class _NeedsTwoArguments(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(a)  # pickled with one argument: unpickling it fails


def _unloadable_answer() -> Exception:
    return _NeedsTwoArguments(1, 2)


def _sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_worker_that_stops_between_requests_is_replaced_without_waiting_for_one():
    async def test(pool):
        victim = pool._workers[0].process
        assert pool.alive == 2
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pool.alive == 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen_down = pool.alive  # the loop has read the end of the dead worker's socket
        while pool.restarts == 0 and time.monotonic() < deadline + 10:
            await asyncio.sleep(0.05)  # no request comes: the replacement comes by itself
        workers = _workers(pool)
        running = [process_alive(p) for p in workers]
        return victim.pid, seen_down, pool.restarts, pool.alive, workers, running

    killed, seen_down, restarts, alive, workers, running = asyncio.run(_with_pool(test))
    assert seen_down == 1
    assert restarts == 1 and alive == 2
    assert killed not in workers and all(running)
