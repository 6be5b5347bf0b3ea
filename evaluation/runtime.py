"""What the evaluation core needs from its environment, as one typed, frozen value: ``Runtime``.

The core never reads the environment or ftgate.settings. The edges (the CLI, the worker, the app factory,
the demo, the benches) read their settings once, build a Runtime from them (``Settings.runtime()``, the one
place that maps settings to it) and pass it in: the gate's entry points take ``runtime=`` and hand it down.

The named-thing registries (bases, policies) and the judges are process-wide by design (the service
registers its database's bases into them; a judge's model is loaded once per process), so their operator
layers read the *process* runtime: the one an edge installed with ``use_runtime`` when it started. An entry
point called without ``runtime=`` uses that one too. A process whose edge installed none (a library user, a
unit test) gets ``Runtime()``, whose defaults are the settings' defaults.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.generation import DecodingConfig

DTYPES = ("auto", "bfloat16", "float32")


@dataclass(frozen=True)
class Runtime:
    """Where the core keeps its caches, what it runs on, its defaults and its intake limits.

    ftgate.settings declares each of these as an FTGATE_ setting (with its description) and takes its
    default from here, so the two cannot disagree.
    """

    cache_dir: Path = Path.home() / ".cache" / "ftgate"
    device: str = "cpu"
    dtype: str = "auto"
    bases_file: Path | None = None
    policies_dir: Path | None = None
    llama_guard_path: Path | None = None
    default_base: str = "guarded-smollm2"
    default_judge: str = "embedded"
    default_policy: str = "default"
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    cache_candidate_results: bool = True
    max_dataset_examples: int = 100_000
    max_archive_files: int = 16
    max_unpacked_bytes: int = 1024 * 1024 * 1024
    max_adapter_rank: int = 256

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))  # a str from a caller is fine


_installed: Runtime | None = None
_lock = threading.Lock()


def use_runtime(runtime: Runtime) -> Runtime:
    """Make ``runtime`` this process's (an edge calls it once when it starts). Returns the one before it, so
    a test can put it back."""
    global _installed
    if not isinstance(runtime, Runtime):
        raise TypeError(f"use_runtime takes a Runtime, not {type(runtime).__name__}")
    with _lock:
        previous, _installed = current_runtime(), runtime
    return previous


def current_runtime() -> Runtime:
    """The process's runtime: the one an edge installed, else the defaults."""
    return _installed if _installed is not None else _DEFAULT


_DEFAULT = Runtime()
