"""Scrubber behaviour: placeholders, kept context, keys, configuration, hashing, counts."""

from __future__ import annotations

import enum
import hashlib
import hmac
import random
import string

import pytest

from tachimeter.errors import ConfigError
from tachimeter.privacy import DEFAULT_SCRUBBER, Scrubber

rng = random.Random(23)


def fake(alphabet: str, size: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(size))


ALNUM = string.ascii_letters + string.digits


# -- text ---------------------------------------------------------------------------------


def test_spec_406_sample_key() -> None:
    """Spec 406: `sk-` and 20 or more characters is an API key."""
    text = "Failed with key sk-abc123def456ghi789jkl012mno345"
    scrubbed = DEFAULT_SCRUBBER.scrub_text(text)
    assert "[REDACTED_API_KEY]" in scrubbed
    assert "sk-abc123" not in scrubbed


@pytest.mark.parametrize(
    ("secret", "placeholder"),
    [
        ("s" + "k-" + fake(ALNUM, 47) + "7", "[REDACTED_API_KEY]"),
        ("AKIA" + fake(string.ascii_uppercase, 16), "[REDACTED_AWS_KEY]"),
        ("ghp_" + fake(ALNUM, 36), "[REDACTED_GITHUB_TOKEN]"),
        ("glpat-" + fake(ALNUM, 20), "[REDACTED_GITLAB_TOKEN]"),
        ("xoxb-1234-5678-" + fake(ALNUM, 24), "[REDACTED_SLACK_TOKEN]"),
        ("eyJhbGciOiJIUzI1NiJ9." + fake(ALNUM, 30) + "." + fake(ALNUM, 43), "[REDACTED_JWT]"),
        ("ya29." + fake(ALNUM, 60), "[REDACTED_OAUTH_TOKEN]"),
    ],
)
def test_token_placeholders_name_the_kind(secret: str, placeholder: str) -> None:
    """A vendor token becomes a placeholder that says what it was."""
    assert DEFAULT_SCRUBBER.scrub_text(f"using {secret} now") == f"using {placeholder} now"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [REDACTED]"),
        ("retry with Bearer 9f8e7d6c5b4a", "retry with Bearer [REDACTED]"),
        ("postgres://app:hunter2@db:5432/prod", "postgres://app:[REDACTED]@db:5432/prod"),
        ("redis://:s3cret@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        ("login password=hunter2 ok", "login password=[REDACTED] ok"),
        ('{"password": "correct horse"}', '{"password": "[REDACTED]"}'),
        ("{'api_key': 'k-123'}", "{'api_key': '[REDACTED]'}"),
        ("db:\n  password: hunter2\n  port: 5432", "db:\n  password: [REDACTED]\n  port: 5432"),
        ("GET /cb?token=abc&page=2", "GET /cb?token=[REDACTED]&page=2"),
        (
            "https://x.blob.core.windows.net/c?sv=1&sig=abc%2B",
            "https://x.blob.core.windows.net/c?sv=1&sig=[REDACTED]",
        ),
        ("Cookie: session=abc; theme=dark", "Cookie: [REDACTED]"),
        ("My API Key: abcd1234", "My API Key: [REDACTED]"),
        ("export DJANGO_SECRET_KEY=k9(x&a=b+c)d", "export DJANGO_SECRET_KEY=[REDACTED]"),
        ("login(password=hunter2)", "login(password=[REDACTED])"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"),
        ("upstream sent Basic dXNlcjpwYXNz", "upstream sent Basic [REDACTED]"),
    ],
)
def test_context_is_kept_around_the_secret(text: str, expected: str) -> None:
    """Secrets found by context lose their value only; key, scheme and host stay."""
    assert DEFAULT_SCRUBBER.scrub_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Bearer authentication is required",
        "Basic usage: run with --help",
        "Basic credentials are configured",  # base64-decodable, but no `user:password`
        "time to first token: 0.35s",
        "max_tokens: 4096, token_count=12, input_tokens: 5",
        "def login(self, password: str) -> None:",
        "api_key = os.environ['OPENAI_API_KEY']",
        "self.api_key = api_key",
        "password = getpass.getpass()",
        "token = None",
        "secret: ****",
        "UPDATE users SET password = ? WHERE id = ?",
        "git@github.com:org/repo.git",
        "https://user@example.com/path",
        "Processing task-abc123def456ghi789jkl012mno345",
        "sk-learn-compatible-transformers-pipeline",
        "ada.lovelace@example.com",
        # code seen in the standard library
        'if token == "lambda":',
        "def extract(self, member, path=None, pwd=None):",
        'print("Token: " + repr(tt))',
        "def unix_getpass(prompt='Password: ', stream=None):",
        "if cookie == 0 and self._decoder:",
        "return '<a href=\"topic?key=%s\">%s</a>' % (name, name)",
        "pwd = (self.password.encode('utf-8') if isinstance(self.password, str)",
        "#cap = 'AUTH=%s' % mech",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    """Prose, code and token counts that look like secrets are not touched."""
    assert DEFAULT_SCRUBBER.scrub_text(text) == text


def test_empty_and_short_strings() -> None:
    """Nothing to find in strings too short to hold a secret."""
    for text in ("", "a", "ok", "pwd", "search", "gpt-4o"):
        assert DEFAULT_SCRUBBER.scrub_text(text) is text
    assert DEFAULT_SCRUBBER.scrub_text("pwd=x") == "pwd=[REDACTED]"


def test_scrubbing_twice_changes_nothing() -> None:
    """Placeholders are never re-read as secrets."""
    text = (
        "Authorization: Bearer abc.def-123\npostgres://u:pw@h/db password=x "
        "token: [REDACTED] sk-" + fake(ALNUM, 40) + "9 Cookie: a=b"
    )
    once = DEFAULT_SCRUBBER.scrub_text(text)
    assert DEFAULT_SCRUBBER.scrub_text(once) == once


# -- values and keys ------------------------------------------------------------------------


def test_sensitive_keys_are_masked_at_any_depth() -> None:
    """Values under sensitive keys become "[REDACTED]", whatever their type."""
    value = {
        "headers": {"Authorization": "x", "Accept": "json"},
        "auth": {"user": "u", "password": "p"},
        "steps": [{"api_key": 123, "tool": "bash"}, ("token", {"refresh_token": ["a"]})],
        "input_tokens": 512,
        "password": None,
    }
    assert Scrubber().scrub_value(value) == {
        "headers": {"Authorization": "[REDACTED]", "Accept": "json"},
        "auth": "[REDACTED]",
        "steps": [
            {"api_key": "[REDACTED]", "tool": "bash"},
            ("token", {"refresh_token": "[REDACTED]"}),
        ],
        "input_tokens": 512,
        "password": None,  # nothing to hide; "no password set" stays visible
    }


def test_drop_mode_removes_sensitive_keys() -> None:
    """With sensitive_key_action="drop" the key goes too."""
    scrubber = Scrubber(sensitive_key_action="drop")
    value = {"token": "t", "nested": {"X-Api-Key": "k", "max_tokens": 8}, "model": "gpt-4o"}
    assert scrubber.scrub_value(value) == {"nested": {"max_tokens": 8}, "model": "gpt-4o"}
    assert scrubber.is_sensitive_key("X-Api-Key")


def test_drop_keys_are_dropped_in_either_mode() -> None:
    """drop_keys are normalised like built-in names and always removed."""
    scrubber = Scrubber(drop_keys=["Email", "ip-address"])
    value = {"e_mail": "x", "email_verified": True, "IP_Address": "10.0.0.1", "password": "p"}
    assert scrubber.scrub_value(value) == {"email_verified": True, "password": "[REDACTED]"}
    assert scrubber.is_sensitive_key("EMAIL")


def test_scrub_value_returns_new_containers() -> None:
    """Containers are rebuilt even when clean; tuples stay tuples; other objects pass."""
    marker = object()
    value = {"a": [1, ("x", 2.5)], "b": marker, "c": True, "d": None}
    scrubbed = Scrubber().scrub_value(value)
    assert scrubbed == value
    assert scrubbed is not value
    assert scrubbed["a"] is not value["a"]
    assert type(scrubbed["a"][1]) is tuple
    assert scrubbed["b"] is marker


def test_clean_str_subclasses_are_kept() -> None:
    """An enum member that is a str stays itself when it holds nothing secret."""

    class Tool(enum.StrEnum):
        SEARCH = "web_search"

    assert Scrubber().scrub_value([Tool.SEARCH])[0] is Tool.SEARCH


def test_keys_themselves_are_not_rewritten() -> None:
    """Keys are names: they are kept (or dropped), never scrubbed, so no two collide."""
    key = "ghp_" + fake(ALNUM, 36)
    assert list(Scrubber().scrub_value({key: 1})) == [key]


def test_deep_and_cyclic_values_do_not_raise() -> None:
    """Values nested deeper than 64 levels are replaced whole instead of recursing on."""
    deep: list[object] = []
    current = deep
    for _ in range(500):
        current.append([])
        current = current[0]  # type: ignore[assignment]
    cyclic: list[object] = ["x"]
    cyclic.append(cyclic)
    scrubber = Scrubber()
    assert "[REDACTED]" in repr(scrubber.scrub_value(deep))
    assert scrubber.scrub_value(cyclic)[0] == "x"


# -- configuration --------------------------------------------------------------------------


def test_extra_patterns_are_replaced() -> None:
    """User patterns replace their matches with "[REDACTED]", after the built-ins."""
    scrubber = Scrubber(extra_patterns=[r"ACME-\d{6}", r"[\w.+-]+@[\w-]+\.[\w.]+"])
    assert scrubber.scrub_text("ticket ACME-123456 from ada@example.com") == (
        "ticket [REDACTED] from [REDACTED]"
    )
    assert scrubber.scrub_text("ok") == "ok"


def test_extra_patterns_never_rewrite_placeholders() -> None:
    """A broad user pattern does not eat the placeholders the built-ins wrote."""
    scrubber = Scrubber(extra_patterns=[r"[A-Z]{4,}"])
    once = scrubber.scrub_text("password=x and HELLO")
    assert once == "password=[REDACTED] and [REDACTED]"
    assert scrubber.scrub_text(once) == once


def test_invalid_extra_pattern_is_a_config_error() -> None:
    """The error names the pattern, its index and the regex engine's complaint."""
    with pytest.raises(ConfigError, match=r"extra_patterns\[1\] 'a\(b'.*missing \), unterminated"):
        Scrubber(extra_patterns=["ok", "a(b"])


def test_pattern_matching_nothing_is_a_config_error() -> None:
    """A pattern that matches the empty string would redact between every character."""
    with pytest.raises(ConfigError, match="matches the empty string"):
        Scrubber(extra_patterns=["x*"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sensitive_key_action": "hide"}, "must be 'mask' or 'drop'"),
        ({"hash_user_ids": True}, "salt must be set"),
        ({"hash_user_ids": True, "salt": ""}, "salt must be set"),
        ({"drop_keys": ["--"]}, r"drop_keys\[0\]"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, object], message: str) -> None:
    """Configuration errors raise ConfigError when the scrubber is built."""
    with pytest.raises(ConfigError, match=message):
        Scrubber(**kwargs)  # type: ignore[arg-type]


def test_user_ids_are_hashed_with_the_salt() -> None:
    """hash_user_id is HMAC-SHA256(salt, id), 32 hex digits; the salt is never shown."""
    salt = "pepper-" + fake(ALNUM, 16)
    scrubber = Scrubber(hash_user_ids=True, salt=salt)
    expected = hmac.new(salt.encode(), b"user-42", hashlib.sha256).hexdigest()[:32]
    assert scrubber.hash_user_id("user-42") == expected
    assert scrubber.hash_user_id(None) is None
    assert Scrubber(hash_user_ids=True, salt="other-salt").hash_user_id("user-42") != expected
    assert salt not in repr(scrubber)


def test_user_ids_pass_through_when_hashing_is_off() -> None:
    """Without hashing, hash_user_id is the identity."""
    assert Scrubber(salt="unused-salt").hash_user_id("u1") == "u1"


# -- counts ---------------------------------------------------------------------------------


def test_counts_of_replacements() -> None:
    """scrub_text_counted counts one call; scrubbed_count accumulates every replacement."""
    scrubber = Scrubber()
    text, count = scrubber.scrub_text_counted("password=a token=b ok")
    assert (text, count) == ("password=[REDACTED] token=[REDACTED] ok", 2)
    assert scrubber.scrub_text_counted("clean") == ("clean", 0)
    scrubber.scrub_value({"api_key": "k", "note": "pwd=x", "n": [None]})
    assert scrubber.scrubbed_count == 4
