"""Fixtures for these tests; their helpers live in ``analytics_fixtures`` (a uniquely named module,
so that several test folders can be collected together)."""

from analytics_fixtures import seeded, small_db  # noqa: F401 - registers the fixtures
