"""The HTTP service: FastAPI app (api.app.create_app), `ftgate serve` (api.serve) and `ftgate submit` (api.client)."""
