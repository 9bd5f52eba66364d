"""Shared fixtures. Service fixtures (Redis, PostgreSQL) live in tests/fixtures_services.py."""

pytest_plugins = ["tests.fixtures_services"]
