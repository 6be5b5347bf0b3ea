"""The ML core of ftgate: bases, adapters, datasets, fine-tuning, generation, judges, suites, metrics, policy.

May import torch, transformers and peft (lazily, inside functions, where a light caller imports the module);
never FastAPI, Celery, SQLAlchemy, the service layers or ftgate.settings, so the CLI and the workers call the
very same functions (tests/unit/test_layering.py holds these rules). What the core needs from its
environment comes in as one ``runtime.Runtime``, built by the caller from its settings.

Start with gate.py (the four stages and ``run_check``), then policy.py (the verdict) and scoring.py (what is
measured). Named things are in registries (registry.py): bases.py, suites.py, judges/, datasets.py, policy.py.
Shared helpers, one each: files.py (hashes, atomic writes), formatting.py (rates as text), fields.py (config
fields with help and bounds), metric_info.py (what each metric means). Interfaces: docs/CONTRACTS.md; the
verdict's rules: docs/policy.md; the report: docs/report.md.
"""
