"""Fixtures for these tests; their helpers live in ``mission_envs`` (a uniquely named module,
so that several test folders can be collected together)."""

from mission_envs import bare_db, env, light, make_env  # noqa: F401 - registers the fixtures
