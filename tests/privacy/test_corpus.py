"""The scrubber against corpora: every fake secret is removed, ordinary text is kept."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
from secret_corpus import Secret, contexts, ordinary_text, secrets

from tachimeter.privacy import Scrubber

SECRETS = secrets()
ORDINARY = ordinary_text()
# Ordinary text may be altered this often at most (the bar); the corpus is
# meant to stay at zero, and the test prints the rate it measured.
MAX_FALSE_POSITIVE_RATE = 0.01


def _encodings(part: str) -> set[str]:
    """``part`` as it reads raw, JSON-escaped (once or twice) and Python-repr-escaped."""
    once = json.dumps(part)[1:-1]
    return {part, once, json.dumps(once)[1:-1], repr(part)[1:-1]}


def test_corpora_are_large_enough() -> None:
    """At least 30 secret shapes (each in 8 contexts) and 200 ordinary strings."""
    assert len({secret.shape for secret in SECRETS}) >= 30
    assert len(ORDINARY) >= 200
    assert len(set(ORDINARY)) == len(ORDINARY)


@pytest.mark.parametrize("secret", SECRETS, ids=[secret.shape for secret in SECRETS])
def test_no_secret_survives_in_any_context(secret: Secret) -> None:
    """Zero leaks: no part of the secret, in any encoding, is left in the output."""
    scrubber = Scrubber()
    for text in contexts(secret.form):
        scrubbed = scrubber.scrub_text(text)
        for part in secret.parts:
            for encoded in _encodings(part):
                assert encoded not in scrubbed, f"{secret.shape} leaked from {text!r}"
        assert "[REDACTED" in scrubbed


# Header values run to the end of their line (`Cookie: a=1; b=2`), by design.
LINE_VALUED = {"bearer_header", "basic_header", "jwt_cookie", "cookie_header"}


@pytest.mark.parametrize("secret", SECRETS, ids=[secret.shape for secret in SECRETS])
def test_surrounding_text_is_kept(secret: Secret) -> None:
    """Only the secret goes: the text around it stays as it was."""
    scrubber = Scrubber()
    assert scrubber.scrub_text(f"before {secret.form}\nafter").endswith("\nafter")
    scrubbed = scrubber.scrub_text(f"before {secret.form} after")
    assert scrubbed.startswith("before ")
    if secret.shape not in LINE_VALUED:
        assert scrubbed.endswith(" after")


def test_secrets_in_nested_values_are_removed() -> None:
    """Secrets deep inside properties are found the same way as in plain text."""
    payload = {"steps": [{"tool": "bash", "args": (secret.form, 3)} for secret in SECRETS]}
    dumped = json.dumps(Scrubber().scrub_value(payload))
    for secret in SECRETS:
        for part in secret.parts:
            assert json.dumps(part)[1:-1] not in dumped, secret.shape


def test_ordinary_text_is_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """At most 1% of ordinary strings change (UUIDs, SHAs, paths, code, model names)."""
    scrubber = Scrubber()
    altered = {text: scrubber.scrub_text(text) for text in ORDINARY}
    altered = {text: result for text, result in altered.items() if result != text}
    rate = len(altered) / len(ORDINARY)
    with capsys.disabled():
        print(f"\nfalse positives: {len(altered)}/{len(ORDINARY)} ordinary strings ({rate:.1%})")
        for before, after in altered.items():
            print(f"  {before!r} -> {after!r}")
    assert rate <= MAX_FALSE_POSITIVE_RATE


def test_unchanged_strings_are_the_same_object() -> None:
    """Clean text costs no allocation: the very same string comes back."""
    scrubber = Scrubber()
    for text in ORDINARY:
        if scrubber.scrub_text(text) == text:
            assert scrubber.scrub_text(text) is text


def test_standard_library_source_is_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """Real text nobody wrote for this test: the lines of Python's own modules (code,
    docstrings, comments; about 100 000) are almost all left unchanged."""
    scrubber = Scrubber()
    lines = [
        line
        for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    altered = [line for line in lines if scrubber.scrub_text(line) != line]
    rate = len(altered) / len(lines)
    with capsys.disabled():
        print(f"\nstandard library: {len(altered)}/{len(lines)} lines altered ({rate:.3%})")
    assert len(lines) > 50_000
    assert rate <= 0.001
