"""Secret shapes and sensitive key names: the data the scrubber is built from (internal).

Two kinds of rule live here.

**Secret shapes** (:data:`SECRET_PATTERNS`) are regular expressions for secrets inside
free text. A pattern's *capturing* groups mark the secret (for an assignment, those of
its ``value`` regex); the rest of its match is context that stays in the output, so
``Bearer abc.def`` becomes ``Bearer [REDACTED]`` and ``postgres://app:pw@db/x`` becomes
``postgres://app:[REDACTED]@db/x``. A pattern without capturing groups replaces its
whole match. Patterns use only scoped inline flags
(``(?ai:...)``), no named groups and no back-references, because the scrubber joins the
patterns of one :data:`Family` into a single alternation.

The scrubber also rewrites them for speed. Python's regex engine tries an alternation
at every position whose character can start an alternative, so a token is found from
the rarest character of its literal prefix (the ``J`` of ``eyJ``, the ``K`` of
``AKIA``), the rest of the prefix and the word boundary being checked by lookbehinds;
other patterns are grouped by their literal first character.

Vendor tokens are recognised by their documented prefix and length, never by entropy
alone: "any 40 base64 characters" would also eat git SHAs and hashes. Secrets without a
recognisable shape (an AWS secret key, a password) are found by their *context*: the
key they are assigned to (``aws_secret_access_key = ...``, ``"password": "..."``), an
``Authorization`` header, the password slot of a URL.

**Sensitive keys** (:func:`key_is_sensitive`) decide which mapping keys have their value
masked or dropped, and which ``key=value`` pairs in text have their value replaced.
The rule, on the key normalised by :func:`normalize_key` (lowercase, ``-``, ``_``,
``.`` and spaces removed, so ``X-Api-Key``, ``api_key`` and ``apiKey`` are one key):

* the key is exactly one of :data:`SENSITIVE_KEY_NAMES`, or
* it ends with one of :data:`SENSITIVE_KEY_SUFFIXES` (``openai_api_key``,
  ``DB_PASSWORD``, ``github_token``, ``aws_secret_access_key``), unless
* it ends with ``token`` preceded by a word of :data:`NON_SECRET_TOKEN_WORDS`
  (``time_to_first_token``, ``cost_per_token``, ``eos_token``).

Token *counts* are never sensitive: ``input_tokens``, ``max_tokens``, ``token_count``,
``tokens_used`` and ``gen_ai.usage.input_tokens`` end in ``tokens`` or ``count``, not in
``token``. Neither are keys that merely start with a sensitive word
(``password_changed_at``, ``token_type``, ``secret_name``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal

import msgspec

__all__ = [
    "ASSIGNMENT_WORDS",
    "HEADER_WORDS",
    "NON_SECRET_TOKEN_WORDS",
    "PLACEHOLDER",
    "PLACEHOLDER_PATTERN",
    "SECRET_PATTERNS",
    "SENSITIVE_KEY_NAMES",
    "SENSITIVE_KEY_SUFFIXES",
    "Family",
    "SecretPattern",
    "key_is_sensitive",
    "normalize_key",
]

PLACEHOLDER: Final = "[REDACTED]"
"""What replaces a secret found by context, a sensitive key's value and a user pattern."""

PLACEHOLDER_PATTERN: Final = r"\[REDACTED(?:_[A-Z]+)*\]"
"""Every placeholder the scrubber writes (``[REDACTED]``, ``[REDACTED_API_KEY]``, ...)."""

Family = Literal["token", "assignment", "bearer", "basic", "url", "query"]
"""How a pattern is gated and checked by the scrubber.

``token``: a vendor token, found by its shape alone. ``assignment``: a ``key=value``
pair or header whose key must be sensitive (:func:`key_is_sensitive`) and whose unquoted
value must not be code (``password: str``, ``api_key=os.environ[...]``). ``bearer``: an
``Authorization: Bearer`` credential anywhere. ``basic``: a Basic credential, which must
decode from base64 to ``user:password``. ``url``: the ``:password@`` of a URL, which must
follow ``scheme://user``. ``query``: a signature or key in a query string.
"""


class SecretPattern(msgspec.Struct, frozen=True):
    """One secret shape: ``regex`` finds it, ``placeholder`` replaces its secret part.

    >>> SecretPattern("npm", "[REDACTED_API_KEY]", r"[A-Za-z0-9]{36,}+", prefixes=("npm_",)).family
    'token'
    """

    name: str
    placeholder: str
    regex: str
    family: Family = "token"
    prefixes: tuple[str, ...] = ()
    """For tokens: literal prefixes, one of which precedes ``regex`` and follows a
    character that is not a letter or digit (``task-...`` holds no ``sk-`` key)."""
    value: str = ""
    """For assignments: the regex of the value, matched where ``regex`` (the key word
    and separator) ends. Its capturing groups are the secret; the last one holds a
    value written without quotes, which is checked for stand-ins (``None``, ``%s``)."""
    value_may_be_code: bool = False
    """For assignments: an unquoted value may also be code rather than a secret
    (``password: str``, ``api_key=os.environ[...]``)."""


# Characters of the value of a `key=value` pair written without quotes. It stops at
# whitespace, quotes and the separators of query strings, cookies and argument lists,
# so `password=x&next=/` keeps `&next=/`. Brackets are kept (`p(4)ss`); the scrubber
# gives back unbalanced closing ones (`f(password=x)`).
_BARE_VALUE = r"""[^\s"'`,;&<>\\|]++"""
# The value of an environment line (`SECRET_KEY=...`, upper-case key, no spaces) runs to
# the next space: generated keys use `&`, `(` and `=` (Django's do).
_ENV_VALUE = r"""[^\s"'\\]++"""
# A double-quoted value, also inside JSON encoded as a JSON string, once or more
# (`{\"password\": \"x\"}`): backslash escapes are part of the value, but `\"` ends it.
_DQ_VALUE = r"""(?:[^"\\\r\n]|\\[^"\r\n])++"""
_SQ_VALUE = r"""[^'\r\n]++"""
_NOT_PLACEHOLDER = r"(?!\[REDACTED)"
# `password: x`, `"password": "x"`, `password = 'x'`, `:password => "x"`, `pwd := x`;
# not a comparison (`token == x`).
_SEPARATOR = r"""(?:\\*+["'])?[ \t]*+(?:=>|:=|[:=](?!=))[ \t]*+"""
# The last word of a sensitive key (`key_is_sensitive` then judges the whole key), and
# the header names whose value is the rest of the line. Case-insensitive for ASCII only,
# so that the scrubber's cheap `str.lower` pre-check never misses a match.
ASSIGNMENT_WORDS: Final = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "key",
    "credentials",
    "credential",
    "creds",
    "auth",
)
HEADER_WORDS: Final = (
    "proxy-authorization",
    "authorization",
    "set-cookie",
    "cookies",
    "cookie",
)
# An authorization scheme before a value stays visible: `auth: Bearer [REDACTED]`.
# Possessive: on a second pass `Bearer [REDACTED]` must not be re-read with `Bearer` as
# the value.
_AUTH_SCHEME = r"(?:(?ai:bearer|basic|token|bot|digest|negotiate|ntlm|aws4-hmac-sha256)[ \t]++)?+"
# A quoted value counts only with its closing quote: in `prompt='Password: ', x=1` the
# quote after the separator closes a string instead of opening a value. Without one, the
# value is read as unquoted (a log line cut inside `"password": "hunt`).
_VALUE = (
    rf"""(?:\\*+"{_AUTH_SCHEME}{_NOT_PLACEHOLDER}({_DQ_VALUE})(?=\\*")"""
    rf"""|'{_AUTH_SCHEME}{_NOT_PLACEHOLDER}({_SQ_VALUE})(?=')"""
    rf"""|(?:\\*+["'])?{_AUTH_SCHEME}{_NOT_PLACEHOLDER}({_BARE_VALUE}))"""
)
# Header values run to the end of the line or to a quote: `Cookie: a=1; b=2`,
# `Authorization: AWS4-HMAC-SHA256 Credential=...`, `curl -H 'Cookie: a=1' ...`.
_HEADER_VALUE = (
    rf"""(?:\\*+"{_AUTH_SCHEME}{_NOT_PLACEHOLDER}({_DQ_VALUE})(?=\\*")"""
    rf"""|'{_AUTH_SCHEME}{_NOT_PLACEHOLDER}({_SQ_VALUE})(?=')"""
    rf"""|(?:\\*+["'])?{_AUTH_SCHEME}{_NOT_PLACEHOLDER}([^\s"'\\][^\r\n"'\\]*+))"""
)
# A PEM block is at most a few kilobytes (an RSA-4096 key is about 3.3 kB); the bounds
# keep a truncated block from making the search quadratic.
_PEM_LABEL = r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_PEM_TRUNCATED = r"""(?:[A-Za-z0-9+/=\s:,.\-]|\\[nr]){0,20000}+"""


def _by_first_letter(
    name: str, words: Sequence[str], separator: str, value: str, *, upper_case: bool = False
) -> tuple[SecretPattern, ...]:
    """Assignments of ``words``, as alternatives that start with a literal letter.

    ``(?i:password)`` would make the regex engine try the alternative at every position;
    ``p(?ai:assword)`` and ``P(?ai:assword)`` are skipped after one comparison. With
    ``upper_case`` the words match in capitals only (environment variable names).
    """
    tails_by_letter: dict[str, list[str]] = {}
    for word in words:
        tails_by_letter.setdefault(word[0], []).append(re.escape(word[1:]))
    patterns: list[SecretPattern] = []
    for first, tails in tails_by_letter.items():
        ordered = sorted(tails, key=len, reverse=True)  # `cookies` before `cookie`
        if upper_case:
            alternation = "|".join(tail.upper() for tail in ordered)
            regexes = [f"{first.upper()}(?:{alternation}){separator}"]
        else:
            alternation = "|".join(ordered)
            regexes = [
                f"{letter}(?ai:{alternation}){separator}" for letter in (first, first.upper())
            ]
        patterns.extend(
            SecretPattern(
                name,
                PLACEHOLDER,
                regex,
                "assignment",
                value=value,
                value_may_be_code=not upper_case,
            )
            for regex in regexes
        )
    return tuple(patterns)


_API_KEY: Final = "[REDACTED_API_KEY]"

_GITLAB_KINDS: Final = ("pat", "dt", "rt", "ptt", "cbt", "soat", "ffct", "oas", "imt", "agent")

SECRET_PATTERNS: Final[tuple[SecretPattern, ...]] = (
    # -- vendor tokens: documented prefix + body -------------------------------------------
    SecretPattern(
        "pem_private_key",
        "[REDACTED_PRIVATE_KEY]",
        # A complete block, else (a log line cut it short) everything key-like after BEGIN.
        rf"{_PEM_LABEL[len('-----BEGIN') :]}(?:[\s\S]{{0,20000}}?{_PEM_END}|{_PEM_TRUNCATED})",
        prefixes=("-----BEGIN",),
    ),
    SecretPattern(
        "anthropic",
        _API_KEY,
        r"[A-Za-z0-9]{2,12}-[A-Za-z0-9_-]{20,}+",
        prefixes=("sk-ant-",),
    ),
    SecretPattern(
        # OpenAI legacy (`sk-` + 48), project/service keys (`sk-proj-`, `sk-svcacct-`),
        # OpenRouter and Langfuse (`sk-or-v1-`, `sk-lf-`). Spec 406 asks for `sk-` + 20
        # or more; the digit requirement spares kebab-case names such as `sk-learn-...`.
        "openai",
        _API_KEY,
        r"(?=[A-Za-z0-9_-]*?[0-9])[A-Za-z0-9][A-Za-z0-9_-]{19,}+",
        prefixes=("sk-",),
    ),
    SecretPattern(
        "stripe",
        _API_KEY,
        r"[A-Za-z0-9]{16,}+",
        prefixes=("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
    ),
    # ElevenLabs and other `sk_` + hex keys.
    SecretPattern("sk_underscore", _API_KEY, r"[A-Za-z0-9]{32,}+", prefixes=("sk_",)),
    SecretPattern("stripe_webhook", _API_KEY, r"[A-Za-z0-9+/=]{24,}+", prefixes=("whsec_",)),
    SecretPattern(
        "aws_access_key_id",
        "[REDACTED_AWS_KEY]",
        r"[A-Z0-9]{16}(?![A-Za-z0-9])",
        prefixes=("AKIA", "ASIA", "ABIA", "ACCA"),
    ),
    SecretPattern(
        "github",
        "[REDACTED_GITHUB_TOKEN]",
        r"[A-Za-z0-9]{36,}+",
        prefixes=("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    SecretPattern(
        "github_fine_grained",
        "[REDACTED_GITHUB_TOKEN]",
        r"[A-Za-z0-9_]{22,}+",
        prefixes=("github_pat_",),
    ),
    SecretPattern(
        "gitlab",
        "[REDACTED_GITLAB_TOKEN]",
        r"[A-Za-z0-9_-]{20,}+",
        prefixes=tuple(f"gl{kind}-" for kind in _GITLAB_KINDS),
    ),
    SecretPattern(
        "slack",
        "[REDACTED_SLACK_TOKEN]",
        r"[A-Za-z0-9-]{10,}+",
        prefixes=tuple(f"xox{kind}-" for kind in "abposre"),
    ),
    SecretPattern(
        "slack_app", "[REDACTED_SLACK_TOKEN]", r"[0-9]-[A-Za-z0-9-]{10,}+", prefixes=("xapp-",)
    ),
    SecretPattern(
        # The URL path is the secret; the host stays visible.
        "slack_webhook",
        "[REDACTED_WEBHOOK]",
        r"([A-Za-z0-9_/-]{10,}+)",
        prefixes=tuple(
            f"hooks.slack.com/{kind}/" for kind in ("services", "workflows", "triggers")
        ),
    ),
    SecretPattern(
        "discord_webhook",
        "[REDACTED_WEBHOOK]",
        r"([0-9]+/[A-Za-z0-9_-]+)",
        prefixes=("discord.com/api/webhooks/", "discordapp.com/api/webhooks/"),
    ),
    SecretPattern(
        # A bot token is base64(user id) . base64(time) . HMAC; ids start with 1-9,
        # so the first segment starts with M, N or O. No literal prefix: a full regex.
        "discord",
        "[REDACTED_DISCORD_TOKEN]",
        r"[MNO](?<![A-Za-z0-9_-][MNO])[A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\."
        r"[A-Za-z0-9_-]{27,40}(?![A-Za-z0-9_-])",
    ),
    SecretPattern("google_api", _API_KEY, r"[0-9A-Za-z_-]{35}", prefixes=("AIza",)),
    SecretPattern("google_oauth_secret", _API_KEY, r"[A-Za-z0-9_-]{24,}+", prefixes=("GOCSPX-",)),
    SecretPattern(
        "google_oauth_token", "[REDACTED_OAUTH_TOKEN]", r"[A-Za-z0-9_-]{20,}+", prefixes=("ya29.",)
    ),
    SecretPattern("huggingface", _API_KEY, r"[A-Za-z0-9]{30,}+", prefixes=("hf_", "api_org_")),
    SecretPattern("npm", _API_KEY, r"[A-Za-z0-9]{36,}+", prefixes=("npm_",)),
    SecretPattern("pypi", _API_KEY, r"[A-Za-z0-9_-]{50,}+", prefixes=("pypi-AgE",)),
    SecretPattern(
        "sendgrid", _API_KEY, r"[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}", prefixes=("SG.",)
    ),
    # Twilio API key SIDs; account SIDs (`AC...`) are identifiers, not secrets.
    SecretPattern("twilio", _API_KEY, r"[0-9a-fA-F]{32}(?![A-Za-z0-9])", prefixes=("SK",)),
    SecretPattern("groq", _API_KEY, r"[A-Za-z0-9]{40,}+", prefixes=("gsk_",)),
    SecretPattern("replicate", _API_KEY, r"[A-Za-z0-9]{30,}+", prefixes=("r8_",)),
    SecretPattern("xai", _API_KEY, r"[A-Za-z0-9]{40,}+", prefixes=("xai-",)),
    SecretPattern("perplexity", _API_KEY, r"[A-Za-z0-9]{40,}+", prefixes=("pplx-",)),
    SecretPattern("tavily", _API_KEY, r"[A-Za-z0-9_-]{20,}+", prefixes=("tvly-",)),
    SecretPattern(
        "langsmith", _API_KEY, r"[a-f0-9]{32}_[a-f0-9]{10}", prefixes=("lsv2_pt_", "lsv2_sk_")
    ),
    SecretPattern("e2b", _API_KEY, r"[a-f0-9]{40}", prefixes=("e2b_",)),
    SecretPattern(
        "digitalocean", _API_KEY, r"[a-f0-9]{64}", prefixes=("dop_v1_", "doo_v1_", "dor_v1_")
    ),
    SecretPattern("databricks", _API_KEY, r"[a-f0-9]{32}(?![A-Za-z0-9])", prefixes=("dapi",)),
    SecretPattern("vault", _API_KEY, r"[A-Za-z0-9_-]{24,}+", prefixes=("hvs.", "hvb.", "hvr.")),
    SecretPattern("linear", _API_KEY, r"[A-Za-z0-9]{40}", prefixes=("lin_api_",)),
    SecretPattern("notion", _API_KEY, r"[A-Za-z0-9]{40,}+", prefixes=("ntn_",)),
    SecretPattern(
        "shopify",
        _API_KEY,
        r"[a-fA-F0-9]{32}",
        prefixes=("shpat_", "shpca_", "shppa_", "shpss_"),
    ),
    SecretPattern("postman", _API_KEY, r"[a-f0-9]{24}-[a-f0-9]{34}", prefixes=("PMAK-",)),
    SecretPattern("atlassian", _API_KEY, r"[A-Za-z0-9_=-]{50,}+", prefixes=("ATATT3",)),
    SecretPattern(
        # header.payload.signature, each base64url; the header is JSON, hence `eyJ`.
        # Encrypted tokens (JWE) have five segments.
        "jwt",
        "[REDACTED_JWT]",
        r"[A-Za-z0-9_-]{10,}+\.[A-Za-z0-9_-]{10,}+\.[A-Za-z0-9_-]*+(?:\.[A-Za-z0-9_-]++){0,2}",
        prefixes=("eyJ",),
    ),
    # -- secrets found by their context ---------------------------------------------------------
    *_by_first_letter("header", HEADER_WORDS, _SEPARATOR, _HEADER_VALUE),
    *_by_first_letter(
        "environment",
        ASSIGNMENT_WORDS,
        "=",
        f"{_AUTH_SCHEME}{_NOT_PLACEHOLDER}({_ENV_VALUE})",
        upper_case=True,
    ),
    *_by_first_letter("key_value", ASSIGNMENT_WORDS, _SEPARATOR, _VALUE),
    SecretPattern(
        # RFC 6750 token characters. The token must contain a digit or a symbol, or be
        # long, so that prose ("Bearer authentication") is left alone.
        "bearer",
        PLACEHOLDER,
        r"[Bb](?:earer|EARER)[ \t]++"
        + _NOT_PLACEHOLDER
        + r"(?=[A-Za-z]*+[0-9._~+/=-]|[A-Za-z]{16})"
        r"([A-Za-z0-9._~+/=-]{6,}+)",
        "bearer",
    ),
    SecretPattern(
        "basic_auth", PLACEHOLDER, r"[Bb](?:asic|ASIC)[ \t]++([A-Za-z0-9+/]{8,}+={0,2})", "basic"
    ),
    SecretPattern(
        # `scheme://user:password@host`; the user stays visible. Starts at the colon so
        # that a token used as the user name is still found by its own pattern.
        "url_password",
        PLACEHOLDER,
        r""":((?!\[REDACTED)[^\s@/"'<>]{1,256}+)@""",
        "url",
    ),
    SecretPattern(
        # Signed URLs (Azure SAS, S3 and GCS presigned) and `?key=` API keys.
        "query_signature",
        PLACEHOLDER,
        r"[?&](?ai:sig|signature|x-amz-signature|x-goog-signature|key)="
        + _NOT_PLACEHOLDER
        + r"([^&#\s\"'<>]++)",
        "query",
    ),
)
"""The built-in secret shapes, in priority order (the first one wins at a position)."""


SENSITIVE_KEY_NAMES: Final[frozenset[str]] = frozenset({"auth", "creds"})
"""Normalised keys that are sensitive only as a whole word (``oauth`` is not)."""

SENSITIVE_KEY_SUFFIXES: Final[tuple[str, ...]] = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "secretkey",
    "accesskey",
    "accesskeyid",
    "accountkey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "credential",
    "credentials",
    "cookie",
    "cookies",
    "authorization",
    "connectionstring",
    "basicauth",
    "httpauth",
    "proxyauth",
)
"""Normalised key endings that make a key sensitive (``client_secret``, ``X-Api-Key``)."""

NON_SECRET_TOKEN_WORDS: Final[tuple[str, ...]] = (
    # latency and price figures
    "first",
    "last",
    "per",
    # counts and limits, when written in the singular
    "input",
    "output",
    "prompt",
    "completion",
    "max",
    "min",
    "num",
    "total",
    # tokenizer vocabulary entries
    "eos",
    "bos",
    "pad",
    "unk",
    "sep",
    "cls",
    "mask",
    "stop",
    "special",
    "start",
    "end",
)
"""Words before a final ``token`` that mean an LLM token, not a credential."""

_NON_SECRET_TOKEN_KEYS: Final = tuple(word + "token" for word in NON_SECRET_TOKEN_WORDS)
# Removed by normalisation; `str.translate` deletes them in one pass.
_SEPARATORS: Final = str.maketrans("", "", "-_. \t")


def normalize_key(key: str) -> str:
    """``key`` lowercased without ``-``, ``_``, ``.`` and whitespace.

    >>> normalize_key("X-Api-Key"), normalize_key("gen_ai.usage.input_tokens")
    ('xapikey', 'genaiusageinputtokens')
    """
    return key.lower().translate(_SEPARATORS)


def key_is_sensitive(normalized: str) -> bool:
    """Whether a normalised key names a secret (the rule in the module docstring).

    >>> keys = ("apiKey", "max_tokens", "time_to_first_token", "DB_PASSWORD")
    >>> [key_is_sensitive(normalize_key(k)) for k in keys]
    [True, False, False, True]
    """
    if normalized in SENSITIVE_KEY_NAMES:
        return True
    if not normalized.endswith(SENSITIVE_KEY_SUFFIXES):
        return False
    return not normalized.endswith(_NON_SECRET_TOKEN_KEYS)
