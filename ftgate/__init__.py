"""ftgate: a release gate for fine-tunes. See README.md.

This package is the user's edge: cli.py (`ftgate check`, `bootstrap`, `make-adapter`, the listings; it hands
`serve` and `submit` to api/), demo.py (`make run`), settings.py (the one typed settings object, read once at
each edge and turned into the core's ``evaluation.runtime.Runtime``) and status.py (the submission statuses,
standard library only, shared by the service and the CI client). May import evaluation and, inside the
commands that need them, api and services. Start with cli.py.
"""

__version__ = "0.1.0"
