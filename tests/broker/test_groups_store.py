"""The committed-offset journal on its own: replay, torn tails, rewrite, group commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import pytest

from onceflow.broker.log.flusher import GroupFlusher
from onceflow.broker.log.journal import Journal
from onceflow.broker.offsets import CommittedOffset, OffsetStore


def _no_fsync(journal: Journal) -> Awaitable[None] | None:
    """The ``--flush never`` policy: written is durable enough."""
    _, end = journal.flush_targets()
    journal.mark_durable(end)
    return None


def _offset(value: int, metadata: str = "") -> CommittedOffset:
    return CommittedOffset(value, 2, metadata, 1_000)


def test_replay_restores_commits_and_deletions(tmp_path: Path) -> None:
    path = tmp_path / "offsets.journal"
    store = OffsetStore(path, _no_fsync)
    store.commit("g", {("t", 0): _offset(5, "m"), ("t", 1): _offset(6)})
    store.commit("g", {("t", 0): _offset(7)})
    store.commit("h", {("u", 0): _offset(1)})
    store.delete("g", [("t", 1)])
    store.delete("h", [("u", 0)])
    store.close()

    reopened = OffsetStore(path, _no_fsync)
    assert reopened.groups == {"g": {("t", 0): _offset(7)}}
    reopened.close()


def test_a_torn_tail_is_cut_off_and_writing_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "offsets.journal"
    store = OffsetStore(path, _no_fsync)
    store.commit("g", {("t", 0): _offset(5)})
    store.close()
    intact = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b'0badc0de {"g":"g","c":[["t",0,99')  # a crash mid-write

    store = OffsetStore(path, _no_fsync)
    assert store.get("g") == {("t", 0): _offset(5)}
    assert path.stat().st_size == intact
    store.commit("g", {("t", 0): _offset(6)})
    store.close()
    assert OffsetStore(path, _no_fsync).get("g") == {("t", 0): _offset(6)}


def test_the_journal_is_rewritten_when_it_outgrows_the_live_offsets(tmp_path: Path) -> None:
    path = tmp_path / "offsets.journal"

    async def run() -> None:
        store = OffsetStore(path, _no_fsync, compact_min_bytes=4096)
        rewrites = 0
        for value in range(2000):
            store.commit("g", {("t", value % 3): _offset(value)})
            if store.compacting is not None:
                rewrites += 1
                await store.compacting
        assert rewrites >= 2
        # 2000 records of ~60 bytes, but only three live offsets.
        assert path.stat().st_size <= 2 * 4096
        store.close()

    asyncio.run(run())
    reopened = OffsetStore(path, _no_fsync)
    assert reopened.get("g") == {
        ("t", 0): _offset(1998),
        ("t", 1): _offset(1999),
        ("t", 2): _offset(1997),
    }


def test_concurrent_commits_share_fsync_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offsets.journal"
    fsyncs = 0
    real_fsync = Journal.fsync

    def counting_fsync(journal: Journal) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(journal)

    monkeypatch.setattr(Journal, "fsync", counting_fsync)

    async def run() -> None:
        flusher = GroupFlusher()
        store = OffsetStore(path, flusher.request)
        try:
            waits = [store.commit(f"g{i}", {("t", 0): _offset(i)}) for i in range(50)]
            assert all(w is not None for w in waits)
            # Not durable yet: a reader must wait.
            assert store.durable() is not None
            await asyncio.gather(*waits)  # type: ignore[arg-type]
            assert store.durable() is None
        finally:
            await flusher.drain()
            store.close()

    asyncio.run(run())
    # All 50 were written before the first round ran: one or two fsyncs, not fifty
    # (plus the one of close()).
    assert 2 <= fsyncs <= 4
    assert OffsetStore(path, _no_fsync).get("g49") == {("t", 0): _offset(49)}


BACKLOGGED = 1200


def test_commits_during_a_rewrite_are_kept(tmp_path: Path) -> None:
    """The rewrite runs off the loop while commits go on: those made before its snapshot
    is on disk (kept aside, then copied) and after (written to both files) all survive
    in the journal that replaces the old one."""
    path = tmp_path / "offsets.journal"

    async def run() -> None:
        store = OffsetStore(path, _no_fsync, compact_min_bytes=1 << 30)
        for value in range(100):
            store.commit(f"g{value}", {("t", 0): _offset(value)})
        store.compact()
        compaction = store.compacting
        assert compaction is not None
        # More commits than one write may carry buffers (IOV_MAX) before the rewrite's
        # first step can come back to the loop: all of them wait to be copied.
        for value in range(100, BACKLOGGED):
            store.commit(f"g{value % 500}", {("t", 0): _offset(value)})
        value = BACKLOGGED
        while not compaction.done() and value < 100_000:
            store.commit(f"g{value % 500}", {("t", 0): _offset(value)})
            value += 1
            await asyncio.sleep(0)  # let the rewrite's steps come back to the loop
        await compaction
        for extra in range(value, value + 10):
            store.commit(f"g{extra % 500}", {("t", 0): _offset(extra)})
        assert store.compacting is None
        store.close()
        return value + 10

    end = asyncio.run(run())
    assert end > BACKLOGGED + 10, "no commit was made while the rewrite ran"
    assert not path.with_name(path.name + ".tmp").exists()  # the new file replaced it
    expected = {f"g{value}": value for value in range(100)}
    expected.update({f"g{value % 500}": value for value in range(100, end)})
    reopened = OffsetStore(path, _no_fsync)
    assert {g: o[("t", 0)].offset for g, o in reopened.groups.items()} == expected
    reopened.close()
