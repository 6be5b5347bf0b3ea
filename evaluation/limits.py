"""Run one function in a child process under a hard time and memory limit.

Inspection reads attacker-controlled files. Its parsers are bounded, but a bound we missed must cost one
submission, not a worker: a hang holding the GIL starves the heartbeat, and the reaper then hands the
same file to the next worker. Here the child is killed at the deadline or stops at its address-space
limit, and the caller gets ``InputRejected`` (the submitter's artifact is what it could not handle), which
the pipeline records as *rejected* and never retries.

The child is *spawned* (a fresh interpreter), not forked: the worker has a heartbeat thread and torch's
thread pools, and a fork copies their locks in whatever state they are in. A fresh interpreter has none of
the caller's configuration: the caller hands over its ``Runtime`` (evaluation/runtime.py), which the child
installs as its process runtime (the registries and judges read that one) before it calls the target.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
import traceback
from collections.abc import Callable
from typing import Any

from evaluation.errors import InputRejected
from evaluation.runtime import Runtime, use_runtime

# how a child reports back: ("ok", value) | ("rejected", reason, code) | ("memory", text) | ("error", text)
_Outcome = tuple


def _child(conn, target: Callable[..., Any], kwargs: dict, runtime: Runtime | None, memory_bytes: int) -> None:
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        if runtime is not None:
            use_runtime(runtime)
        conn.send(("ok", target(**kwargs)))
    except InputRejected as e:
        conn.send(("rejected", e.reason, e.code))
    except MemoryError:
        conn.send(("memory", "out of memory"))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it there
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"))
    finally:
        conn.close()


def run_limited(target: Callable[..., Any], kwargs: dict, *, seconds: float, memory_bytes: int,
                runtime: Runtime | None = None, what: str = "inspection") -> Any:
    """``target(**kwargs)`` in a spawned child; its return value (picklable) or the child's InputRejected.

    Over ``seconds`` (wall clock) or ``memory_bytes`` (address space; 0: none): InputRejected with code
    ``too_slow`` / ``too_big``. Any other exception in the child: RuntimeError carrying its traceback (our
    fault, so *failed*, retried as usual). ``target`` must be importable by name (a module-level function).
    ``runtime``: the child's process runtime (None: the defaults).
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, target, kwargs, runtime, memory_bytes), daemon=True)
    proc.start()
    child.close()
    deadline = time.monotonic() + seconds
    try:
        if not parent.poll(max(0.0, deadline - time.monotonic())):
            raise InputRejected(f"{what} took longer than {seconds:g} s: the artifact is too costly to check",
                                "too_slow")
        try:
            outcome: _Outcome = parent.recv()
        except EOFError:  # the child died without a word: killed by the kernel, usually for memory
            proc.join(5)
            raise InputRejected(f"{what} stopped (exit code {proc.exitcode}) before it finished: the artifact "
                                f"needs more than the {memory_bytes // 2**20} MiB it may use", "too_big") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    kind = outcome[0]
    if kind == "ok":
        return outcome[1]
    if kind == "rejected":
        raise InputRejected(outcome[1], outcome[2])
    if kind == "memory":
        raise InputRejected(f"{what} needed more than the {memory_bytes // 2**20} MiB it may use", "too_big")
    raise RuntimeError(f"{what} failed in its child process: {outcome[1]}")
