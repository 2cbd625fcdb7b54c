"""Which replica may answer a read: the write marks and the probe's choice, without servers
(the real replica is tests/enrich/test_replicas.py's)."""

from __future__ import annotations

import time

from app.core.replicas import UNKNOWN, Replica, ReplicaProbe, WriteMarks


def digest(n: int) -> bytes:
    return n.to_bytes(16, "big")


def settled(max_entries: int = 4, primary: int = 100) -> WriteMarks:
    marks = WriteMarks(max_entries)
    marks.settle(marks.snapshot(), primary)
    return marks


class TestWriteMarks:
    def test_nothing_may_be_read_on_a_replica_before_the_primary_position_is_known(self) -> None:
        marks = WriteMarks(4)
        assert marks.required([digest(1)]) == UNKNOWN
        marks.settle(marks.snapshot(), 100)
        assert marks.required([digest(1)]) == 100

    def test_a_read_needs_the_newest_write_of_each_of_its_keys(self) -> None:
        marks = settled()
        marks.note([digest(1)], 150)
        marks.note([digest(2)], 180)
        marks.note([digest(1)], 120)  # an older position heard late changes nothing
        assert marks.required([digest(1)]) == 150
        assert marks.required([digest(1), digest(2)]) == 180
        assert marks.required([digest(3)]) == 100

    def test_a_forgotten_write_raises_the_floor_never_lowers_a_need(self) -> None:
        marks = settled(max_entries=2)
        marks.note([digest(1)], 500)
        marks.note([digest(2)], 200)
        marks.note([digest(3)], 300)  # digest 1 is forgotten
        assert len(marks) == 2
        assert marks.required([digest(1)]) == 500
        assert marks.required([digest(4)]) == 500

    def test_a_write_heard_without_a_position_waits_for_the_primary(self) -> None:
        marks = settled()
        marks.note([digest(1)], None)
        assert marks.required([digest(1)]) == UNKNOWN
        assert marks.required([digest(2)]) == 100
        snapshot = marks.snapshot()
        marks.note([digest(1)], None)  # again, after the primary's position was asked
        marks.settle(snapshot, 400)
        assert marks.required([digest(1)]) == UNKNOWN
        marks.settle(marks.snapshot(), 450)
        assert marks.required([digest(1)]) == 450

    def test_a_known_position_heard_meanwhile_is_kept(self) -> None:
        marks = settled()
        marks.note([digest(1)], None)
        snapshot = marks.snapshot()
        marks.note([digest(1)], 900)  # committed after the primary was asked
        marks.settle(snapshot, 400)
        assert marks.required([digest(1)]) == 900

    def test_a_process_that_may_have_missed_writes_waits_for_the_primary(self) -> None:
        marks = settled()
        snapshot = marks.snapshot()
        marks.suspend()
        marks.settle(snapshot, 300)  # asked before the suspension: does not count
        assert marks.required([digest(1)]) == UNKNOWN
        marks.settle(marks.snapshot(), 350)
        assert marks.required([digest(1)]) == 350

    def test_forgetting_a_write_without_a_position_waits_for_the_primary(self) -> None:
        marks = settled(max_entries=1)
        marks.note([digest(1)], None)
        marks.note([digest(2)], 120)  # digest 1 is forgotten while still unknown
        assert marks.required([digest(3)]) == UNKNOWN
        marks.settle(marks.snapshot(), 130)
        assert marks.required([digest(3)]) == 130


def probe_with(*replayed: int, max_lag: float = 5.0) -> ReplicaProbe:
    probe = ReplicaProbe(
        "postgresql+asyncpg://u@primary/db",
        [f"postgresql+asyncpg://u:secret@replica{i}/db" for i in range(len(replayed))],
        settled(),
        lambda: True,
        interval=0.1,
        max_lag=max_lag,
        timeout=1.0,
    )
    now = time.monotonic()
    for replica, position in zip(probe.replicas, replayed, strict=True):
        replica.replayed, replica.usable, replica.checked_at = position, True, now
    return probe


class TestProbe:
    def test_only_a_replica_that_replayed_the_write_is_picked(self) -> None:
        probe = probe_with(100, 300)
        picked = {probe.pick(200).index for _ in range(4)}  # type: ignore[union-attr]
        assert picked == {1}
        assert {probe.pick(50).index for _ in range(4)} == {0, 1}  # type: ignore[union-attr]
        assert probe.pick(301) is None
        assert probe.pick(UNKNOWN) is None

    def test_a_failed_or_silent_replica_is_skipped(self) -> None:
        probe = probe_with(300, 300)
        probe.failed(probe.replicas[0])
        probe.replicas[1].checked_at = time.monotonic() - 60
        assert probe.pick(100) is None

    def test_a_replica_too_far_behind_is_not_usable(self) -> None:
        probe = probe_with(0, max_lag=5.0)
        now = time.monotonic()
        probe._samples.extend([(now - 10, 100), (now - 4, 200), (now, 300)])
        assert probe._caught_up(200, now)
        assert not probe._caught_up(150, now)  # lacks what the primary had 4 s ago

    def test_the_replica_names_in_logs_carry_no_password(self) -> None:
        replica: Replica = probe_with(1).replicas[0]
        assert "secret" not in replica.name
        assert replica.name == "replica0:5432/db"
