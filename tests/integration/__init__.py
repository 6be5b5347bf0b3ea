"""Integration tier: real PostgreSQL and Redis (FTGATE_TEST_PG_URL, FTGATE_TEST_REDIS_URL), the app in-process
or live, the evaluation core faked (fake_core/) where it would need real models."""
