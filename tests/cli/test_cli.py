"""The command line: version, help, the demo; as a real subprocess and in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tachimeter.cli import app
from tachimeter.cli.demo import generate_agent_events
from tachimeter.model.data import library_version

runner = CliRunner()


def test_version_and_help_list_the_commands() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tachimeter {library_version()}"
    helped = runner.invoke(app, ["--help"])
    assert helped.exit_code == 0 and "demo" in helped.output


def test_demo_runs_the_pipeline_and_scrubs_secrets(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "tachimeter.cli", "demo", "--events", "2000", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "flushed and acknowledged" in result.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines, "no events written"
    text = out.read_text()
    for secret_prefix in ("sk-ant-api03-", "sk-proj-", "ghp_"):
        assert secret_prefix not in text
    assert any("[REDACTED" in json.dumps(line) for line in lines)


def test_generated_events_are_reproducible() -> None:
    first = generate_agent_events(300, seed=3)
    assert len(first) == 300
    assert [k for k, _ in first] == [k for k, _ in generate_agent_events(300, seed=3)]


def test_the_same_seed_keeps_the_same_events_through_sampling(tmp_path: Path) -> None:
    """The collector samples performance events (rate 0.1): its draws are seeded too."""
    kept = []
    for run in range(2):
        out = tmp_path / f"events-{run}.jsonl"
        result = runner.invoke(app, ["demo", "--events", "1500", "--seed", "5", "--out", str(out)])
        assert result.exit_code == 0, result.output
        events = [json.loads(line) for line in out.read_text().splitlines()]
        kept.append(sorted(json.dumps([e["event_type"], e.get("data")]) for e in events))
    assert kept[0] == kept[1]
