"""Hypothesis strategies for the privacy tests: JSON-like values and secret-laden text."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from secret_corpus import secrets

KEY_NAMES = ["password", "api_key", "X-Api-Key", "token", "max_tokens", "input_tokens", "model"]
keys = st.sampled_from(KEY_NAMES) | st.text(max_size=12)
FRAGMENTS = sorted(
    {secret.form for secret in secrets()}
    | {"password", "Password", "PWD", "token", "first_token", "api key", "Authorization"}
    | {"Bearer", "bearer", "Basic", "dXNlcjpwYXNz", "://", "user", "@host", "sk-", "eyJ"}
    | {"[REDACTED]", "[REDACTED_API_KEY]", "os.environ[", "str", "None", "(", ")", "\\"}
)
texts = st.lists(
    st.sampled_from(FRAGMENTS)
    | st.text(max_size=6)
    | st.sampled_from([" ", "=", ": ", '"', "'", "\n", "&", "?", "/", ";", ",", "_", "-"]),
    max_size=12,
).map("".join)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | texts
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
