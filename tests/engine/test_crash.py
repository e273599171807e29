"""Crash test: SIGKILL a process running hundreds of works at random moments, restart it,
and check that nothing was lost, duplicated, or done twice."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from engine import replay
from engine.store.codec import decode_event

from .crash_child import STAGES

WORKS = 300
KILLS = 6


def spawn(db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.engine.crash_child", str(db),
                             str(WORKS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])


def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    rng = random.Random(7)
    killed = 0
    for _ in range(KILLS):
        child = spawn(db)
        time.sleep(rng.uniform(0.3, 1.5))  # a random moment, not a synchronisation
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed += 1
        child.communicate(timeout=30)
    final = spawn(db)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-3000:]
    assert "all done" in out
    assert killed >= 3, "the child finished too fast to be killed: raise WORKS"

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT work_id, seq, type, version, path, attempt, payload, time, "
                            "worker, position FROM events ORDER BY work_id, seq").fetchall()
        ledger = conn.execute("SELECT work_id, path FROM ledger").fetchall()
        statuses = dict(conn.execute("SELECT work_id, status FROM works").fetchall())
    names = ("work_id", "seq", "type", "version", "path", "attempt", "payload", "time",
             "worker", "position")
    streams: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        streams.setdefault(str(row[0]), []).append(dict(zip(names, row, strict=True)))
    assert len(streams) == WORKS and set(statuses.values()) == {"completed"}
    for work_id, stream in streams.items():
        events = [decode_event(r) for r in stream]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # nothing lost
        kinds = Counter((e.type, e.path) for e in events)
        for stage in STAGES:  # a crash does not add a start: the interrupted call reruns
            assert kinds[("stage.transaction.started", stage)] == 1, (work_id, kinds)
            assert kinds[("stage.transaction.completed", stage)] == 1, (work_id, kinds)
        assert kinds[("work.completed", "")] == 1
        assert replay(events).output == len(STAGES)
    effects = Counter(ledger)
    assert len(effects) == WORKS * len(STAGES)
    assert set(effects.values()) == {1}  # each stage's effect exactly once
