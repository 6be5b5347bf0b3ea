"""ftgate: a release gate for fine-tunes. See README.md."""

__version__ = "0.1.0"
