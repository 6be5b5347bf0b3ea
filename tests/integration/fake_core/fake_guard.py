"""A slow stand-in for evaluation/guard.py: the guarded base "builds" for FAKE_GUARD_BUILD_SECONDS, reporting
steps as the real build does, with the time left; it leaves a marker when it starts and one when it ends."""

import os
import time
from pathlib import Path

STEPS = 250


def build_guarded_base(parent, parent_dir, load_parent, *, cache_dir, progress=print, recipe_path=None) -> Path:
    """The real one's signature (evaluation.guard.build_guarded_base); the parent is never loaded."""
    from evaluation.progress import TimeLeft

    out = Path(cache_dir) / "bases" / "fake-guarded-smollm2"
    if (out / "built").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "build-started").write_text(str(os.getpid()))
    seconds_per_step = float(os.environ.get("FAKE_GUARD_BUILD_SECONDS", "600")) / STEPS
    time_left = TimeLeft()
    progress(f"building guarded-smollm2 ({STEPS} LoRA steps; once per machine)")
    for step in range(1, STEPS + 1):
        time.sleep(seconds_per_step)
        left = time_left(step, STEPS)
        if step % 10 == 0 or step == STEPS:
            progress(f"guard fine-tuning step {step}/{STEPS}, loss 1.000" + (f", {left}" if left else ""))
    (out / "built").write_text("")
    return out
