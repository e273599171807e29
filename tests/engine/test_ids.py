from __future__ import annotations

import time

from engine.ids import new_work_id


def test_work_ids_sort_in_creation_order_across_milliseconds() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_work_id())
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    # the first 12 digits are the creation time in milliseconds
    assert abs(int(ids[0][:12], 16) - time.time() * 1000) < 60_000


def test_work_ids_made_by_one_process_sort_in_the_order_made() -> None:
    ids = [new_work_id() for _ in range(10_000)]  # many in each millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
