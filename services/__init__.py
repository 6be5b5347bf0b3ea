"""The service layer shared by the API and the workers: database (db.py), storage, auth and sign-in, the
submission lifecycle (submissions.py: every status change, against ftgate/status.py's table), quotas and
retention, the catalog, sending work by task name (queue.py), and the read queries of the pages and the
JSON API (queries.py).

Imports models and ftgate.settings; never FastAPI, never tasks, never the evaluation core's heavy modules.
Start with submissions.py (the lifecycle), then queries.py.
"""
