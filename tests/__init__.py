"""The tests, by tier (docs: README "Two commands"; what CI runs: .ci/run).

- unit/: no server, tiny models only; seconds each. A file a module or a rule (test_layering.py: the imports).
- integration/: real PostgreSQL and Redis (tests/conftest.py makes a database per run); the evaluation core
  is faked where the models would be GPU-sized (integration/fake_core).
- e2e/: real models and a real Celery worker; minutes.
- browser/: the pages in a real browser (Playwright) against a live server (tests/live_server.py).

Shared: markers.py (the one rule for a test that cannot run here: skip on a laptop, fail in CI), helpers/
(tiny models, adapters, gate inputs, the core's runtime), fixtures/ (datasets and suites). Tests may import
every layer. Harmful requests are fine in fixtures; harmful responses are compliant in form only.
"""
