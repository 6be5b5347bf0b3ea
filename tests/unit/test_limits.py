"""run_limited: a function in a spawned child, killed at its deadline or stopped at its memory limit; the
child's InputRejected and results come back, and any other error is ours (RuntimeError)."""

from __future__ import annotations

import time

import pytest

from evaluation.errors import InputRejected
from evaluation.limits import run_limited


# module level: the spawned child imports them by name
def add(a: int, b: int) -> int:
    return a + b


def sleep_forever() -> None:
    while True:
        time.sleep(0.05)


def refuse(reason: str) -> None:
    raise InputRejected(reason, "bad_thing")


def allocate(mib: int) -> int:
    return len(bytearray(mib * 2**20))


def crash() -> None:
    raise KeyError("a bug")


def read_setting() -> int:
    from evaluation.runtime import current_runtime

    return current_runtime().max_dataset_examples


def test_result_comes_back():
    assert run_limited(add, {"a": 2, "b": 3}, seconds=60, memory_bytes=0) == 5


def test_a_hang_is_killed_and_rejected_not_failed():
    t0 = time.monotonic()
    with pytest.raises(InputRejected, match="took longer than 3 s") as e:
        run_limited(sleep_forever, {}, seconds=3, memory_bytes=0)
    assert e.value.code == "too_slow"
    assert time.monotonic() - t0 < 30  # killed, not waited for


def test_a_blow_up_stops_at_the_memory_limit_and_is_rejected():
    with pytest.raises(InputRejected, match="more than the 1024 MiB") as e:
        run_limited(allocate, {"mib": 4096}, seconds=60, memory_bytes=2**30)
    assert e.value.code == "too_big"
    assert run_limited(allocate, {"mib": 64}, seconds=60, memory_bytes=2**30) == 64 * 2**20  # under it: fine


def test_the_childs_rejection_keeps_its_reason_and_code():
    with pytest.raises(InputRejected, match="line 3: no messages") as e:
        run_limited(refuse, {"reason": "line 3: no messages"}, seconds=60, memory_bytes=0)
    assert e.value.code == "bad_thing"


def test_any_other_error_is_ours_and_carries_the_traceback():
    with pytest.raises(RuntimeError, match="KeyError: 'a bug'"):
        run_limited(crash, {}, seconds=60, memory_bytes=0)


def test_the_child_runs_with_the_callers_runtime_not_its_environment(monkeypatch):
    from evaluation.runtime import Runtime

    monkeypatch.setenv("FTGATE_MAX_DATASET_EXAMPLES", "99")  # the child's environment: not what it reads
    mine = Runtime(max_dataset_examples=1234)
    assert run_limited(read_setting, {}, seconds=60, memory_bytes=0, runtime=mine) == 1234
    assert run_limited(read_setting, {}, seconds=60, memory_bytes=0) == Runtime().max_dataset_examples
