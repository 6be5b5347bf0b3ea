"""End-to-end tier: the real evaluation core on SmolLM2 and a real Celery worker (minutes; CUDA tests need a GPU)."""
