"""Fixtures for the metrics tests: fresh registries and the real Debian binaries."""

from __future__ import annotations

import os
import shutil

import pytest

from tachimeter.metrics import Registry


@pytest.fixture
def registry() -> Registry:
    """A registry of its own for each test (never the default one)."""
    return Registry()


def system_binary(name: str, package: str) -> str:
    """The path of a binary from a Debian package the tests talk to.

    Missing, the test fails and says how to get it: `make test` installs the system
    packages. Only TACHIMETER_NO_SYSTEM_DEPS=1 turns the failure into a skip.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("TACHIMETER_NO_SYSTEM_DEPS") == "1":
        pytest.skip(f"{name} (Debian package {package}) absent and TACHIMETER_NO_SYSTEM_DEPS=1")
    pytest.fail(
        f"{name} not found: this test runs the real {name} from Debian's {package!r} "
        f"package. Run `make test` (which installs it) or `apt-get install -y {package}`; "
        "set TACHIMETER_NO_SYSTEM_DEPS=1 to skip such tests instead.",
        pytrace=False,
    )


@pytest.fixture
def promtool() -> str:
    """The real promtool (Debian package prometheus)."""
    return system_binary("promtool", "prometheus")


@pytest.fixture
def prometheus_server_binary() -> str:
    """The real Prometheus server (Debian package prometheus)."""
    return system_binary("prometheus", "prometheus")
