"""The ML core of ftgate: bases, adapters, datasets, fine-tuning, generation, judges, suites, metrics, policy.

May import torch, transformers and peft; never FastAPI, Celery or SQLAlchemy, so the CLI and the
workers call the very same functions.
"""
