"""Fixtures for the alert tests: an injected clock, a recording channel, real binaries."""

from __future__ import annotations

import os
import shutil

import pytest
from alerting import FakeClock, RecordingChannel


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def channel() -> RecordingChannel:
    return RecordingChannel()


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
def alertmanager_binary() -> str:
    """The real Prometheus Alertmanager (Debian package prometheus-alertmanager)."""
    return system_binary("prometheus-alertmanager", "prometheus-alertmanager")
