"""The HTTP service: the FastAPI app, its JSON routes under /api/v1, the web pages, `ftgate serve` and
`ftgate submit`.

- app.py: the app factory (``create_app``), the service's edge: it reads the settings once and hands them on.
- deps.py (who is calling: tokens, sessions, roles), schemas.py (the typed answers), errors.py.
- one module a resource: submissions.py, uploads.py, account.py, admin.py, catalog.py, health.py.
- pages/ (the server-rendered pages), serve.py (`ftgate serve`), client.py (`ftgate submit`, for CI).

May import services, models and the light parts of the core (formatting, files, runtime); never tasks (work
is sent by task name through services/queue.py) and never torch. Start with app.py, then submissions.py.
The routes and their answers are documented in docs/api.md.
"""
