"""The writer thread (pipeline.GroupCommitWriter): messages ready together share one commit (at
most batch_max), in the order submitted, each future gets its own outcome, a failed commit
fails every message of that batch and the next batch is committed all the same. The receiver
is a small stand-in whose commit the test holds and releases: no timing involved."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import pytest

from pamfr.path.pipeline import GroupCommitWriter

SAFETY = 10.0  # a hung test fails instead of hanging; no assertion depends on it


@dataclass
class Committer:
    """Receiver.commit's contract: a list of prepared messages in, one outcome each, in order.
    The first commit waits for `release` once `hold` is set; `fail_on` makes a batch fail."""

    hold: bool = False
    fail_on: str | None = None
    batches: list[list[str]] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    threads: set[str] = field(default_factory=set)

    def commit(self, prepared: list[str]) -> list[str]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(prepared))
        self.entered.set()
        if self.hold and len(self.batches) == 1:
            self.release.wait(SAFETY)
        if self.fail_on in prepared:
            raise RuntimeError(f"commit failed on {self.fail_on}")
        return [f"outcome of {p}" for p in prepared]


@dataclass
class Counted:
    sizes: list[int] = field(default_factory=list)

    def committed(self, size: int, seconds: float) -> None:
        assert seconds >= 0
        self.sizes.append(size)


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), SAFETY))


def writer_for(committer: Committer, batch_max: int, metrics: Counted) -> GroupCommitWriter:
    return GroupCommitWriter(committer, batch_max, metrics)  # type: ignore[arg-type]


async def held_first(committer: Committer, writer: GroupCommitWriter) -> asyncio.Future:
    """Submit one message and wait until its commit is in progress (and held)."""
    first = writer.submit("m0")
    await asyncio.to_thread(committer.entered.wait, SAFETY)
    return first


def test_messages_waiting_during_a_commit_go_together_in_order_up_to_batch_max():
    committer, metrics = Committer(hold=True), Counted()
    writer = writer_for(committer, 3, metrics)

    async def scenario() -> None:
        first = await held_first(committer, writer)
        rest = [writer.submit(f"m{n}") for n in range(1, 8)]
        committer.release.set()
        outcomes = await asyncio.gather(first, *rest)
        assert outcomes == [f"outcome of m{n}" for n in range(8)]

    try:
        run(scenario)
    finally:
        writer.close()
    assert committer.batches == [["m0"], ["m1", "m2", "m3"], ["m4", "m5", "m6"], ["m7"]]
    assert metrics.sizes == [1, 3, 3, 1]
    assert committer.threads == {"pamfr-writer"}  # never on the event loop's thread


def test_a_failed_commit_fails_its_batch_only_and_the_writer_goes_on():
    committer, metrics = Committer(hold=True, fail_on="m2"), Counted()
    writer = writer_for(committer, 2, metrics)

    async def scenario() -> None:
        first = await held_first(committer, writer)
        rest = [writer.submit(f"m{n}") for n in range(1, 5)]
        committer.release.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        assert results[0] == "outcome of m0"
        for failed in results[1:3]:  # m1 and m2 shared the failed commit
            assert isinstance(failed, RuntimeError) and "m2" in str(failed)
        assert results[3:] == ["outcome of m3", "outcome of m4"]
        assert await writer.submit("m5") == "outcome of m5"

    try:
        run(scenario)
    finally:
        writer.close()
    assert committer.batches == [["m0"], ["m1", "m2"], ["m3", "m4"], ["m5"]]
    assert metrics.sizes == [1, 2, 2, 1]  # a failed batch is counted too


def test_close_commits_what_was_submitted_before_it_then_stops_the_thread():
    committer, metrics = Committer(hold=True), Counted()
    writer = writer_for(committer, 64, metrics)
    futures: list[asyncio.Future] = []

    async def scenario() -> None:
        futures.append(await held_first(committer, writer))
        futures.extend(writer.submit(f"m{n}") for n in range(1, 4))
        closing = asyncio.create_task(asyncio.to_thread(writer.close))
        committer.release.set()
        await closing
        assert await asyncio.gather(*futures) == [f"outcome of m{n}" for n in range(4)]

    run(scenario)
    assert committer.batches == [["m0"], ["m1", "m2", "m3"]]
    assert not writer._thread.is_alive()


@pytest.mark.parametrize("batch_max", [1, 64])
def test_messages_submitted_one_after_the_other_each_get_their_outcome(batch_max):
    committer, metrics = Committer(), Counted()
    writer = writer_for(committer, batch_max, metrics)

    async def scenario() -> None:
        for n in range(5):
            assert await writer.submit(f"m{n}") == f"outcome of m{n}"

    try:
        run(scenario)
    finally:
        writer.close()
    assert [p for batch in committer.batches for p in batch] == [f"m{n}" for n in range(5)]
    assert sum(metrics.sizes) == 5


def test_with_stop_on_error_nothing_after_a_failed_batch_is_committed():
    committer, metrics = Committer(hold=True, fail_on="m0"), Counted()
    writer = GroupCommitWriter(committer, 2, metrics, stop_on_error=True)  # type: ignore[arg-type]

    async def scenario() -> None:
        first = await held_first(committer, writer)
        rest = [writer.submit(f"m{n}") for n in range(1, 5)]
        committer.release.set()
        answers = await asyncio.gather(first, *rest, return_exceptions=True)
        assert [str(a) for a in answers] == ["commit failed on m0"] * 5
        late = writer.submit("m5")
        with pytest.raises(RuntimeError, match="commit failed on m0"):
            await late

    try:
        run(scenario)
    finally:
        writer.close()
    assert committer.batches == [["m0"]]
