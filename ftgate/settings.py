"""The one typed settings object of ftgate, read once from the environment (prefix FTGATE_) and validated.

Every external part has an embedded default (SQLite, local files, a filesystem broker) so ftgate runs
with no server; production points the same fields at PostgreSQL, Redis and shared storage.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from evaluation.generation import DecodingConfig
from evaluation.runtime import DTYPES, Runtime

# What the evaluation core reads (its caches, device, defaults, limits, decoding) has its defaults declared
# once, in the core's Runtime; Settings.runtime() hands these settings to the core.
_RUNTIME = Runtime()
_DECODING = _RUNTIME.decoding

# The database pool of each process (services/db.py). The bounds keep a typo (50000) from exhausting the
# server's connections and 0 from leaving a process with none.
DEFAULT_POOL_SIZE, POOL_SIZE_RANGE = 5, (1, 100)
DEFAULT_MAX_OVERFLOW, MAX_OVERFLOW_RANGE = 10, (0, 200)

# The session cookie is only as secret as this key: anyone who knows it signs themselves in as anyone.
MIN_SECRET_KEY_LENGTH = 32
# Keys published in ftgate's own files (an earlier default): a cookie signed with one opened the admin pages.
PUBLISHED_SECRET_KEYS = frozenset({"change-me-in-production"})


class InsecureSecretKey(RuntimeError):
    """The service was started with no, a published or a short FTGATE_SECRET_KEY."""


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` must not sign sessions, or None when it may."""
    if not key:
        return "FTGATE_SECRET_KEY is not set"
    if key in PUBLISHED_SECRET_KEYS:
        return "FTGATE_SECRET_KEY is the published default, so anyone can sign a session cookie with it"
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return f"FTGATE_SECRET_KEY has {len(key)} characters; it needs at least {MIN_SECRET_KEY_LENGTH}"
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTGATE_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------
    cache_dir: Path = Field(
        default=_RUNTIME.cache_dir,
        description="Converted base models, guarded base, base-result and fine-tune caches (safe to delete).",
    )
    data_dir: Path = Field(default=Path("var"), description="Embedded service state: SQLite file, uploads, broker.")

    # --- evaluation core ---------------------------------------------------------------
    default_base: str = Field(default=_RUNTIME.default_base, description="The base a check uses when it names none.")
    bases_file: Path | None = Field(default=_RUNTIME.bases_file, description="TOML file registering operator bases.")
    default_judge: str = Field(default=_RUNTIME.default_judge, description="The judge a check uses when it names none.")
    default_policy: str = Field(default=_RUNTIME.default_policy, description="The policy a check uses when it names none.")
    policies_dir: Path | None = Field(default=_RUNTIME.policies_dir, description="Extra policy files (*.toml / *.yaml).")
    llama_guard_path: Path | None = Field(
        default=_RUNTIME.llama_guard_path, description="Folder of a Llama Guard 3 checkpoint, for the llama-guard "
        "judge (none: that judge is unavailable).")
    device: str = Field(
        default=_RUNTIME.device, description="Where 4-bit bases and the llama-guard judge run (cpu, cuda, cuda:0); a cuda "
        "device also makes dtype auto choose bf16. Other bases are evaluated on the CPU.")
    dtype: str = Field(default=_RUNTIME.dtype, description="auto | bfloat16 | float32 (auto: bf16 on a GPU or a CPU with AMX/AVX512-BF16, else fp32).")
    generation_batch_size: int = Field(default=_DECODING.batch_size, description="Prompts generated together.")
    max_new_tokens: int = Field(
        default=_DECODING.max_new_tokens, ge=1,
        description="Tokens of every answer the judge reads first: enough to see a refusal or 'Sure, here is how... "
                    "Step 1'.")
    extended_max_new_tokens: int = Field(
        default=_DECODING.extended_max_new_tokens, ge=0,
        description="Harm-suite answers judged neither refused nor complied and cut off at max_new_tokens are "
                    "continued to this many tokens and judged again (a preamble before compliance); 0: off.")
    cache_candidate_results: bool = Field(
        default=_RUNTIME.cache_candidate_results, description="Serve a re-checked adapter's suite outputs from the cache (base outputs always are)."
    )

    # --- intake limits -----------------------------------------------------------------
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, description="A larger upload gets 413.")
    max_archive_files: int = Field(default=_RUNTIME.max_archive_files, description="Files an adapter archive may hold; more: rejected unread.")
    max_unpacked_bytes: int = Field(
        default=_RUNTIME.max_unpacked_bytes, description="Bytes an adapter may take unpacked (archive or folder); more "
        "and it is rejected.")
    max_adapter_rank: int = Field(default=_RUNTIME.max_adapter_rank, description="The largest LoRA rank accepted; a higher one is rejected.")
    max_dataset_examples: int = Field(default=_RUNTIME.max_dataset_examples, description="Examples a dataset may hold; more: rejected.")
    # Uploads under load (issue 12 #3). The caps are counted in the API process: see docs/security.md for
    # what a deployment with several API processes needs instead.
    upload_idle_timeout_seconds: float = Field(
        default=30.0, description="An upload whose body sends no byte for this long gets 408 and is discarded.")
    upload_max_seconds: float = Field(
        default=900.0, description="The longest one upload's body may take to arrive, however steadily (then 408).")
    max_concurrent_uploads_per_user: int = Field(
        default=4, description="Uploads one user (all their tokens and sessions) may have in flight; more: 429.")
    max_uploads_per_minute_per_user: int = Field(
        default=60, description="Uploads one user may start in any 60 s; more: 429 with Retry-After (0: no limit).")

    inspection_seconds: float = Field(
        default=900.0, description="A worker inspects each upload in a child process killed after this many "
        "seconds (the submission is rejected as too costly to check, not retried). 0: inspect in the worker's own "
        "process, without limits.")
    inspection_memory_bytes: int = Field(
        default=6 * 1024**3, description="Address space the inspection child may use (0: no limit); past it the "
        "submission is rejected. Loading the judge for screening takes about 1.4 GiB of it.")

    # --- quotas and retention (per organisation) ----------------------------------------
    min_free_bytes: int = Field(
        default=1024**3, description="Free space the storage volume keeps in reserve: under it, uploads answer 507 "
        "and /readyz reports the storage unavailable.")
    max_in_flight_per_organisation: int = Field(
        default=20, description="Submissions of one organisation queued or running at once; more answer 429.")
    max_stored_bytes_per_organisation: int = Field(
        default=50 * 1024**3, description="Bytes of uploaded artifacts one organisation keeps stored (expired ones "
        "do not count); an upload past it answers 507.")
    artifact_retention_days: float = Field(
        default=30.0, description="Days after a submission finished that its uploaded artifact, fine-tuned adapter "
        "and work files are deleted by the reaper (0: kept forever). Records, reports and verdicts stay.")

    # --- service -----------------------------------------------------------------------
    database_url: str = Field(
        default="", description="SQLAlchemy URL of the service database, e.g. "
        "postgresql+psycopg://u:pw@host/ftgate. Empty: a SQLite file in data_dir.")
    broker_url: str = Field(
        default="", description="Celery broker URL, e.g. redis://host:6379/0. Empty: a filesystem broker in "
        "data_dir (no server).")
    storage_dir: Path | None = Field(
        default=None, description="Uploads and stage work folders (a volume shared by the API and the "
        "workers). Empty: data_dir/storage.")
    db_pool_size: int = Field(
        default=DEFAULT_POOL_SIZE, description="Database connections each API or worker process keeps open "
        f"(PostgreSQL; {POOL_SIZE_RANGE[0]} to {POOL_SIZE_RANGE[1]}). A request holds one only while it reads or "
        "writes, never while an upload streams.")
    db_max_overflow: int = Field(
        default=DEFAULT_MAX_OVERFLOW, description="Connections a process may open beyond db_pool_size under load, "
        f"closed again when returned ({MAX_OVERFLOW_RANGE[0]} to {MAX_OVERFLOW_RANGE[1]}). Size the server's "
        "max_connections for (db_pool_size + db_max_overflow) x processes.")
    secret_key: str = Field(
        default="",
        description=f"Signs web session cookies; at least {MIN_SECRET_KEY_LENGTH} characters. Empty: `ftgate serve` "
        "generates one and keeps it in data_dir; any other start of the service refuses to run.",
    )
    stale_job_seconds: int = Field(
        default=3 * 3600, description="The reaper fails a stage claimed this long as hung, and enqueues again a "
        "submission whose message was sent this long ago and never claimed.")
    host: str = Field(default="127.0.0.1", description="The address `ftgate serve` listens on.")
    port: int = Field(default=8000, description="The port `ftgate serve` listens on.")
    heartbeat_seconds: float = Field(default=10.0, description="How often a running stage writes a heartbeat.")
    lost_worker_seconds: int = Field(
        default=120, description="A claimed stage whose heartbeat is older than this lost its worker: re-run or fail."
    )
    reaper_interval_seconds: float = Field(default=60.0, description="How often each worker runs the stale-job reaper (0: off).")
    max_stage_attempts: int = Field(default=3, description="Attempts of one stage before the submission fails.")
    visibility_timeout_seconds: int = Field(
        default=0, description="Redis broker visibility timeout; 0: stale_job_seconds + 1 h (longer than any job)."
    )
    progress_interval_seconds: float = Field(default=2.0, description="Progress is written at most this often.")
    session_cookie_secure: bool = Field(
        default=False, description="Send the session cookie over HTTPS only (set it behind TLS).")
    login_free_failures_per_account: int = Field(
        default=5, description="Failed sign-ins to one account before each further one makes it wait (backoff).")
    login_free_failures_per_address: int = Field(
        default=20, description="Failed sign-ins from one client address, any accounts, before the backoff.")
    login_first_backoff_seconds: float = Field(default=1.0, description="The first wait; it doubles per failure.")
    login_max_backoff_seconds: float = Field(default=900.0, description="The longest wait between sign-in attempts.")

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"FTGATE_DTYPE must be {', '.join(DTYPES)}")
        return v

    @field_validator("db_pool_size", "db_max_overflow")
    @classmethod
    def _pool_in_range(cls, v: int, info: ValidationInfo) -> int:
        name = str(info.field_name)
        low, high = POOL_SIZE_RANGE if name == "db_pool_size" else MAX_OVERFLOW_RANGE
        if not low <= v <= high:
            raise ValueError(f"FTGATE_{name.upper()} must be from {low} to {high}, not {v}")
        return v

    def runtime(self) -> Runtime:
        """What the evaluation core reads, from these settings: the one place that maps them (see
        evaluation/runtime.py)."""
        return Runtime(
            cache_dir=self.cache_dir, device=self.device, dtype=self.dtype, bases_file=self.bases_file,
            policies_dir=self.policies_dir, llama_guard_path=self.llama_guard_path, default_base=self.default_base,
            default_judge=self.default_judge, default_policy=self.default_policy,
            decoding=DecodingConfig(max_new_tokens=self.max_new_tokens, batch_size=self.generation_batch_size,
                                    extended_max_new_tokens=self.extended_max_new_tokens),
            cache_candidate_results=self.cache_candidate_results, max_dataset_examples=self.max_dataset_examples,
            max_archive_files=self.max_archive_files, max_unpacked_bytes=self.max_unpacked_bytes,
            max_adapter_rank=self.max_adapter_rank,
        )

    def require_secure_secret_key(self) -> None:
        """Raise InsecureSecretKey, saying how to fix it, unless the session key is safe to sign with."""
        problem = secret_key_problem(self.secret_key)
        if problem:
            raise InsecureSecretKey(
                f"{problem}. Set it to a long random string, e.g. FTGATE_SECRET_KEY=$(openssl rand -hex 32); "
                "`ftgate serve` generates one in its data dir when none is set."
            )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ftgate.db').resolve()}"

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def resolved_visibility_timeout(self) -> int:
        return self.visibility_timeout_seconds or self.stale_job_seconds + 3600


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
