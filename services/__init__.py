"""The service layer shared by the API and the workers: database, storage, auth, the submission lifecycle,
the read queries of the pages and the JSON API (queries.py).

Imports models and ftgate.settings; never FastAPI, never the evaluation core's heavy modules.
"""
