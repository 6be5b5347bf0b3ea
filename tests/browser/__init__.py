"""Browser tier: the pages in a real browser against a live server, on the reports in fixtures/."""
