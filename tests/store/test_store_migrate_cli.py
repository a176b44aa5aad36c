"""``tachimeter migrate status|up|down`` on a real database file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tachimeter.cli.migrate import app
from tachimeter.store import all_migrations

VERSIONS = [m.version for m in all_migrations()]


def _applied(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        conn.close()


def test_status_up_and_down(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    for command in (["status"], ["down", "--yes"]):  # a mistyped path creates nothing
        result = runner.invoke(app, [*command, "--db", db])
        assert result.exit_code == 2 and result.stderr.startswith("error: no store at")
        assert not Path(db).exists()
    sqlite3.connect(db).close()  # an empty file: every migration pending
    result = runner.invoke(app, ["status", "--store", db])
    assert result.exit_code == 0, result.output
    assert result.output.count("pending") == len(VERSIONS)

    result = runner.invoke(app, ["up", "2", "--db", db])
    assert result.exit_code == 0 and "applied: 1, 2; schema version 2" in result.output
    result = runner.invoke(app, ["up", "--db", db])
    assert result.exit_code == 0, result.output
    assert _applied(tmp_path / "cli.db") == VERSIONS
    assert "nothing to apply" in runner.invoke(app, ["up", "--db", db]).output

    refused = runner.invoke(app, ["down", "--db", db])  # asks first; no terminal here
    assert refused.exit_code == 2
    assert f"reverting migrations {VERSIONS[-1]} of " in refused.stderr
    assert "pass --yes" in refused.stderr
    assert _applied(tmp_path / "cli.db") == VERSIONS
    result = runner.invoke(app, ["down", "--db", db, "--yes"])  # the newest one
    assert result.exit_code == 0 and f"reverted: {VERSIONS[-1]};" in result.output
    result = runner.invoke(app, ["down", "1", "--db", db, "-y"])
    assert result.exit_code == 0 and "schema version 1" in result.output
    assert _applied(tmp_path / "cli.db") == [1]
    status = runner.invoke(app, ["status", "--db", db]).output
    assert status.count("│ applied │") == 1
    assert status.count("│ pending │") == len(VERSIONS) - 1


def test_a_newer_database_is_refused_by_every_command(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    runner = CliRunner()
    assert runner.invoke(app, ["up", "--db", str(path)]).exit_code == 0
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x', 'x')")
    conn.commit()
    conn.close()
    for command in (["status"], ["up"], ["down", "1", "--yes"]):
        result = runner.invoke(app, [*command, "--db", str(path)])
        assert result.exit_code == 2
        assert result.stderr.startswith("error: ") and "upgrade tachimeter" in result.stderr
    assert 999 in _applied(path)


@pytest.mark.parametrize("command", ["status", "up", "down"])
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output
