"""How the ``tachimeter`` console script fails: usage errors (a bad choice, a missing
argument, an unknown command or option) and our own errors print one ``error:`` line and
exit 2; a command's own exit status passes through; every help shows examples."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tachimeter.cli import app

SCRIPT = Path(sys.executable).with_name("tachimeter")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACHIMETER_")}
    env["COLUMNS"] = "80"
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.mark.parametrize(
    ("args", "says", "command"),
    [
        (
            ["query", "events", "--format", "bogus"],
            "invalid value for '--format' / '-f': 'bogus' is not one of 'table', 'json', 'csv'",
            "tachimeter query events",
        ),
        (["export", "--what", "nothing"], "invalid value for '--what'", "tachimeter export"),
        (["ingest"], "missing argument 'FILE|-'", "tachimeter ingest"),
        (["bogus"], "no such command 'bogus'", "tachimeter"),
        (["missions", "bogus"], "no such command 'bogus'", "tachimeter missions"),
        (["export", "--what", "events", "--nope"], "no such option: --nope", "tachimeter export"),
        (
            ["query", "events", "--limit", "0"],
            "invalid value for '--limit'",
            "tachimeter query events",
        ),
    ],
)
def test_a_usage_error_is_one_error_line_and_exit_2(
    tmp_path: Path, args: list[str], says: str, command: str
) -> None:
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {says}"), lines[0]
    assert lines[0].endswith(f" (see {command} --help)"), lines[0]


def test_our_own_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _run("query", "events", "--store", str(tmp_path / "none.db"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: no store at") and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["query", "events", "--count", "--since", "99999999d"],
        ["report", "--until", "99999999d"],
        ["missions", "list", "--since", "99999999d"],
    ],
)
def test_a_duration_reaching_before_year_1_is_one_line(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "a.db"
    sqlite3.connect(db).close()
    result = CliRunner().invoke(app, [*args, "--store", str(db)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --") and "reaches before year 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_exit_statuses_of_commands_pass_through(tmp_path: Path) -> None:
    """--help and --version exit 0, a group alone shows its help (exit 2 as before), and
    ingest's own status 1 (a rejected record) is the process's."""
    helped = _run("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "Example: tachimeter" in helped.stdout
    assert _run("--version", cwd=tmp_path).returncode == 0
    alone = _run("query", cwd=tmp_path)
    assert alone.returncode == 2 and "Example: tachimeter query" in alone.stdout
    source = tmp_path / "events.jsonl"
    source.write_text('{"not": "an event"}\n')
    ingested = _run("ingest", str(source), "--store", str(tmp_path / "a.db"), cwd=tmp_path)
    assert ingested.returncode == 1, ingested.stderr
    assert "rejected 1" in ingested.stdout


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group``, groups included."""
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        out.append((*path, name))
        if hasattr(command, "commands"):
            out += _commands(command, (*path, name))
    return out


ROOT = typer.main.get_command(app)


def _help_case(path: tuple[str, ...]) -> Any:
    return pytest.param(path, id=" ".join(path) or "tachimeter")


@pytest.mark.parametrize("path", [_help_case(())] + [_help_case(p) for p in _commands(ROOT)])
def test_every_help_shows_examples(path: tuple[str, ...]) -> None:
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "Example: " in done.output, done.output


def test_help_paragraphs_flow_to_the_width_and_keep_their_words() -> None:
    """Docstrings are wrapped at 88 columns in the source; a help wider than that joins
    their lines (they used to break mid-sentence), and keeps text in brackets."""
    done = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"})
    assert "the exit status is 1 when any was rejected" in done.output
    assert "prop.KEY columns" in done.output
    retention = CliRunner().invoke(app, ["retention", "run", "--help"], env={"COLUMNS": "200"})
    assert "(retention.days in tachimeter.toml)" in retention.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["query", "sql", "select 1", "--timeout", "99999"], "error: --timeout must be in"),
        (
            ["query", "metrics", "up", "--aggregation", "percentiles", "-q", "2"],
            "error: --quantile must be numbers in [0, 1]",
        ),
        (
            ["query", "trends", "--event", "x", "--measure", "sum"],
            "error: measure 'sum' needs --property,",
        ),
        (["query", "events", "--call", "bogus"], "error: --call must be one of track, page"),
        (
            ["query", "funnel", "--step", "a", "--step", "b", "--window", "400d"],
            "error: funnel 'a > b': --window must be above zero and at most 366 days",
        ),
        (["query", "funnel", "--name", "nope"], "error: no funnel named 'nope'; give its --step"),
        (["missions", "list", "--status", "bogus"], "error: --status: 'bogus' is not a mission"),
    ],
)
def test_api_errors_name_the_option_that_was_typed(
    tmp_path: Path, args: list[str], says: str
) -> None:
    db = tmp_path / "a.db"
    from tachimeter.store.sqlite import SQLiteStore

    SQLiteStore(db).close()
    result = CliRunner().invoke(app, [*args, "--store", str(db)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(says), result.stderr
