"""load_config: defaults < file < environment < keyword arguments, with sourced errors."""

from __future__ import annotations

import re
import string
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tachimeter.config import AnalyticsConfig, env_var_name, load_config
from tachimeter.config.sources import ENV_ALIASES, ENV_NOT_SETTINGS
from tachimeter.errors import ConfigError
from tachimeter.model.event_types import EventCategory, EventPriority, SamplingConfig
from tachimeter.model.prices import ModelPrice

SALT = "0123456789abcdef"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, env: dict[str, str] | None = None, **overrides: object) -> AnalyticsConfig:
    """load_config isolated from the real environment and working directory."""
    return load_config(env=env or {}, cwd=tmp_path, **overrides)


def config_error(tmp_path: Path, env: dict[str, str] | None = None, **overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env, **overrides)
    return str(info.value)


# --- precedence ------------------------------------------------------------------------


def test_each_layer_overrides_the_one_below_key_by_key(tmp_path: Path) -> None:
    write(
        tmp_path / "tachimeter.toml",
        """
        app_version = "from-file"
        strict = true
        [collection]
        buffer_size = 10
        flush_interval = 1.5
        queue_capacity = 20
        """,
    )
    env = {
        "TACHIMETER_COLLECTION__FLUSH_INTERVAL": "2.5",
        "TACHIMETER_COLLECTION__QUEUE_CAPACITY": "30",
    }
    config = load(tmp_path, env, **{"collection.queue_capacity": 40})
    assert config.collection.buffer_size == 10  # file over default
    assert config.collection.flush_interval == 2.5  # environment over file
    assert config.collection.queue_capacity == 40  # keyword argument over environment
    assert config.collection.shutdown_timeout == 2.0  # default where nobody set it
    assert config.strict is True
    assert config.app_version == "from-file"


def test_nested_keyword_dicts_merge_with_lower_layers(tmp_path: Path) -> None:
    write(tmp_path / "tachimeter.toml", "[collection]\nbuffer_size = 10\n")
    config = load(tmp_path, collection={"flush_interval": 9})
    assert (config.collection.buffer_size, config.collection.flush_interval) == (10, 9.0)


def test_tachimeter_toml_wins_and_pyproject_is_then_not_read(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.tachimeter]\nstrict = true\napp_version = 'p'\n")
    assert load(tmp_path).strict is True
    write(tmp_path / "tachimeter.toml", "app_version = 't'\n")
    config = load(tmp_path)
    assert (config.app_version, config.strict) == ("t", False)


def test_pyproject_without_a_tachimeter_table_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[project]\nname = 'app'\n")
    assert load(tmp_path) == AnalyticsConfig.default()


def test_file_is_searched_in_the_given_directory_only(tmp_path: Path) -> None:
    write(tmp_path / "tachimeter.toml", "strict = true\n")
    (tmp_path / "sub").mkdir()
    assert load(tmp_path / "sub").strict is False
    assert load_config(tmp_path, env={}, cwd=tmp_path / "sub").strict is True


def test_explicit_path_and_tachimeter_config_variable(tmp_path: Path) -> None:
    custom = write(tmp_path / "custom.toml", "app_version = 'custom'\n")
    other = write(tmp_path / "other.toml", "app_version = 'other'\n")
    write(tmp_path / "tachimeter.toml", "app_version = 'searched'\n")
    assert load_config(custom, env={}, cwd=tmp_path).app_version == "custom"
    by_env = {"TACHIMETER_CONFIG": str(other)}
    assert load_config(env=by_env, cwd=tmp_path).app_version == "other"
    assert load_config(custom, env=by_env, cwd=tmp_path).app_version == "custom"


def test_explicit_pyproject_path_reads_its_tool_table(tmp_path: Path) -> None:
    pyproject = write(
        tmp_path / "pyproject.toml", "[tool.tachimeter.collection]\nbuffer_size = 7\n"
    )
    assert load_config(pyproject, env={}).collection.buffer_size == 7


def test_relative_paths_in_a_file_are_relative_to_that_file(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    write(
        conf_dir / "tachimeter.toml",
        "[storage]\npath = 'data/a.db'\n[collection]\nspool_dir = 'spool'\n"
        "dead_letter_path = '/abs/dead.jsonl'\n",
    )
    config = load_config(conf_dir, env={}, cwd=tmp_path)
    assert Path(config.storage.path) == conf_dir / "data" / "a.db"
    assert Path(config.collection.spool_dir or "") == conf_dir / "spool"
    assert config.collection.dead_letter_path == "/abs/dead.jsonl"
    from_env = load(tmp_path, {"TACHIMETER_DB": "rel.db"})
    assert from_env.storage.path == "rel.db"


# --- environment syntax ----------------------------------------------------------------


def test_environment_values_are_converted_to_the_setting_type(tmp_path: Path) -> None:
    env = {
        "TACHIMETER_ENABLED": "false",
        "TACHIMETER_STRICT": "1",
        "TACHIMETER_MIN_PRIORITY": "high",
        "TACHIMETER_DISABLED_CATEGORIES": "performance, system",
        "TACHIMETER_DISABLED_EVENT_TYPES": "cpu_usage",
        "TACHIMETER_SAMPLING__SEED": "42",
        "TACHIMETER_SAMPLING__PER_CATEGORY__PERFORMANCE__RATE": "0.5",
        "TACHIMETER_PRIVACY__EXTRA_PATTERNS": r'["\\d{3,4}", "sk-[a-z]+"]',
        "TACHIMETER_PRIVACY__DROP_KEYS": "",
        "TACHIMETER_RETENTION__DAYS__METRICS": "3",
        "TACHIMETER_STORAGE__SYNCHRONOUS": "FULL",
        "TACHIMETER_PRICES__OVERRIDES": '{"claude-x": {"input_per_mtok": 3, '
        '"output_per_mtok": 15}}',
    }
    config = load(tmp_path, env)
    assert config.enabled is False
    assert config.strict is True
    assert config.min_priority is EventPriority.HIGH
    assert config.disabled_categories == {EventCategory.PERFORMANCE, EventCategory.SYSTEM}
    assert config.disabled_event_types == {"cpu_usage"}
    assert config.sampling.seed == 42
    assert config.sampling.per_category[EventCategory.PERFORMANCE].rate == 0.5
    assert config.privacy.extra_patterns == (r"\d{3,4}", "sk-[a-z]+")
    assert config.privacy.drop_keys == ()
    assert config.retention.days["metrics"] == 3
    assert config.storage.synchronous == "FULL"
    assert config.prices.overrides["claude-x"].output_per_mtok == Decimal(15)


def test_empty_value_resets_an_optional_setting(tmp_path: Path) -> None:
    write(tmp_path / "tachimeter.toml", "app_version = '1.0'\n")
    assert load(tmp_path, {"TACHIMETER_APP_VERSION": ""}).app_version is None


def test_aliases_db_and_disabled(tmp_path: Path) -> None:
    config = load(tmp_path, {"TACHIMETER_DB": "/tmp/x.db", "TACHIMETER_DISABLED": "1"})
    assert (config.storage.path, config.enabled) == ("/tmp/x.db", False)
    assert load(tmp_path, {"TACHIMETER_DISABLED": "false"}).enabled is True


def test_alias_and_canonical_name_together_are_an_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, {"TACHIMETER_ENABLED": "1", "TACHIMETER_DISABLED": "1"})
    assert "TACHIMETER_DISABLED and TACHIMETER_ENABLED both set enabled" in message


def test_allow_listed_and_foreign_variables_are_ignored(tmp_path: Path) -> None:
    env = {
        "TACHIMETER_API_KEY": "k",
        "TACHIMETER_NO_SYSTEM_DEPS": "1",
        "OTHER_TOOL_BUFFER": "x",
        "tachimeter_lower": "x",
    }
    assert load(tmp_path, env) == load(tmp_path)


def test_a_specific_variable_wins_over_a_json_table(tmp_path: Path) -> None:
    env = {
        "TACHIMETER_COLLECTION": '{"buffer_size": 5, "flush_interval": 2}',
        "TACHIMETER_COLLECTION__BUFFER_SIZE": "6",
    }
    collection = load(tmp_path, env).collection
    assert (collection.buffer_size, collection.flush_interval) == (6, 2.0)


def test_every_short_name_and_allowed_variable_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for name in [*ENV_ALIASES, *ENV_NOT_SETTINGS]:
        assert f"`{name}`" in text, name


def test_env_var_name_of_a_key() -> None:
    assert env_var_name(("collection", "buffer_size")) == "TACHIMETER_COLLECTION__BUFFER_SIZE"


# --- partial sampling rules ------------------------------------------------------------


def test_partial_category_rule_keeps_the_category_defaults(tmp_path: Path) -> None:
    write(tmp_path / "tachimeter.toml", "[sampling.per_category.error]\nrate = 0.5\n")
    rule = load(tmp_path).sampling.per_category[EventCategory.ERROR]
    assert rule == SamplingConfig(rate=0.5, min_per_window=100, window_seconds=60)


def test_partial_event_rule_inherits_from_its_category_rule(tmp_path: Path) -> None:
    env = {
        "TACHIMETER_SAMPLING__PER_CATEGORY__PERFORMANCE__WINDOW_SECONDS": "30",
        "TACHIMETER_SAMPLING__PER_EVENT_TYPE__CPU_USAGE__RATE": "0.01",
        "TACHIMETER_SAMPLING__PER_EVENT_TYPE__ERROR_OCCURRED__RATE": "0.5",
    }
    sampling = load(tmp_path, env).sampling
    assert sampling.per_event_type["cpu_usage"] == SamplingConfig(
        rate=0.01, min_per_window=10, window_seconds=30
    )
    assert sampling.per_event_type["error_occurred"].min_per_window == 100


def test_explicit_sampling_config_object_is_taken_as_written(tmp_path: Path) -> None:
    rule = SamplingConfig(rate=0.5)
    config = load(tmp_path, sampling={"per_category": {EventCategory.ERROR: rule}})
    assert config.sampling.per_category[EventCategory.ERROR] == rule


# --- errors name the key, the value, the source and what is allowed --------------------


def test_bad_enum_from_environment(tmp_path: Path) -> None:
    message = config_error(tmp_path, {"TACHIMETER_COLLECTION__BACKPRESSURE": "dorp"})
    assert message == (
        "collection.backpressure = 'dorp' from environment variable "
        "TACHIMETER_COLLECTION__BACKPRESSURE: expected one of 'drop_lowest_priority', "
        "'block', 'spill'"
    )


def test_bad_type_from_file_names_the_file(tmp_path: Path) -> None:
    file = write(tmp_path / "tachimeter.toml", "[collection]\nbuffer_size = '500'\n")
    assert config_error(tmp_path) == (
        f"collection.buffer_size = '500' from {file}: expected an integer"
    )


def test_bad_type_from_pyproject_names_the_table(tmp_path: Path) -> None:
    file = write(tmp_path / "pyproject.toml", "[tool.tachimeter]\nstrict = 'yes'\n")
    assert config_error(tmp_path) == (
        f"strict = 'yes' from {file} [tool.tachimeter]: expected true or false"
    )


def test_bad_type_from_environment_and_keyword(tmp_path: Path) -> None:
    assert config_error(tmp_path, {"TACHIMETER_STRICT": "yes"}) == (
        "strict = 'yes' from environment variable TACHIMETER_STRICT: expected true or false"
    )
    assert config_error(tmp_path, collection={"flush_interval": "5"}) == (
        "collection.flush_interval = '5' from keyword argument 'collection': expected a number"
    )


def test_bad_list_item_is_pointed_at(tmp_path: Path) -> None:
    message = config_error(tmp_path, disabled_categories=["usage", "perf"])
    assert message.startswith(
        "disabled_categories[1] = 'perf' from keyword argument 'disabled_categories': "
        "expected one of 'usage', 'performance'"
    )


def test_out_of_range_from_each_source(tmp_path: Path) -> None:
    file = write(tmp_path / "tachimeter.toml", "[collection]\nbuffer_size = 0\n")
    assert config_error(tmp_path) == f"collection.buffer_size = 0 from {file}: must be > 0"
    env = {"TACHIMETER_SAMPLING__PER_CATEGORY__PERFORMANCE__RATE": "1.5"}
    assert config_error(tmp_path, env) == (
        "sampling.per_category.performance.rate = 1.5 from environment variable "
        "TACHIMETER_SAMPLING__PER_CATEGORY__PERFORMANCE__RATE: must be in [0, 1]"
    )
    file.unlink()
    assert config_error(tmp_path, **{"storage.busy_timeout_ms": -5}) == (
        "storage.busy_timeout_ms = -5 from keyword argument 'storage.busy_timeout_ms': must be > 0"
    )


def test_overridden_bad_value_in_a_lower_layer_is_not_an_error(tmp_path: Path) -> None:
    write(tmp_path / "tachimeter.toml", "[collection]\nbuffer_size = 0\n")
    assert load(tmp_path, {"TACHIMETER_COLLECTION__BUFFER_SIZE": "5"}).collection.buffer_size == 5


def test_unknown_key_in_file_suggests_the_right_one(tmp_path: Path) -> None:
    file = write(tmp_path / "tachimeter.toml", "[collection]\nbufer_size = 5\n")
    message = config_error(tmp_path)
    assert message.startswith(
        f"collection.bufer_size from {file}: unknown key; did you mean "
        "'collection.buffer_size'? (known keys in collection: buffer_size, flush_interval"
    )


def test_unknown_key_deep_in_a_file(tmp_path: Path) -> None:
    write(tmp_path / "tachimeter.toml", "[sampling.per_category.perfomance]\nrate = 0.5\n")
    assert "did you mean 'sampling.per_category.performance'?" in config_error(tmp_path)
    write(tmp_path / "tachimeter.toml", "[sampling.per_event_type.cpu_usage]\nrat = 0.5\n")
    assert "did you mean 'sampling.per_event_type.cpu_usage.rate'?" in config_error(tmp_path)


def test_unknown_environment_variable_suggests_the_right_name(tmp_path: Path) -> None:
    message = config_error(tmp_path, {"TACHIMETER_COLECTION__BUFFER_SIZE": "500"})
    assert message.startswith(
        "environment variable TACHIMETER_COLECTION__BUFFER_SIZE is not a Tachimeter setting; "
        "did you mean TACHIMETER_COLLECTION__BUFFER_SIZE?"
    )
    single = config_error(tmp_path, {"TACHIMETER_COLLECTION_BUFFER_SIZE": "500"})
    assert "did you mean TACHIMETER_COLLECTION__BUFFER_SIZE?" in single
    deep = config_error(tmp_path, {"TACHIMETER_SAMPLING__PER_EVENT_TYPE__MY_EVENT__RAT": "1"})
    assert "did you mean TACHIMETER_SAMPLING__PER_EVENT_TYPE__MY_EVENT__RATE?" in deep
    alias = config_error(tmp_path, {"TACHIMETER_DISABLE": "1"})
    assert "did you mean TACHIMETER_DISABLED?" in alias


def test_unknown_environment_variable_without_a_close_match_lists_names(tmp_path: Path) -> None:
    message = config_error(tmp_path, {"TACHIMETER_ZZZZZZ": "1"})
    assert "did you mean" not in message
    assert "(known names after TACHIMETER_: ENABLED, DISABLED_CATEGORIES" in message


def test_unknown_keyword_argument_suggests_the_dotted_name(tmp_path: Path) -> None:
    message = config_error(tmp_path, collection_buffer_size=5)
    assert message.startswith(
        "collection_buffer_size from keyword argument 'collection_buffer_size': unknown key; "
        "did you mean 'collection.buffer_size'?"
    )
    nested = config_error(tmp_path, collection={"bufer_size": 5})
    assert "did you mean 'collection.buffer_size'?" in nested


def test_unknown_retention_table_lists_known_ones(tmp_path: Path) -> None:
    message = config_error(tmp_path, **{"retention.days.analytics_event": 30})
    assert "did you mean 'retention.days.analytics_events'?" in message
    assert "metric_aggregates_daily" in message


def test_bad_regex_is_named_with_its_source(tmp_path: Path) -> None:
    file = write(tmp_path / "tachimeter.toml", "[privacy]\nextra_patterns = ['ok', '(x']\n")
    assert config_error(tmp_path).startswith(
        f"privacy.extra_patterns[1] = '(x' from {file}: is not a valid regular expression"
    )


def test_hash_without_salt_names_where_hashing_was_turned_on(tmp_path: Path) -> None:
    message = config_error(tmp_path, {"TACHIMETER_PRIVACY__HASH_USER_IDS": "true"})
    assert message.startswith(
        "privacy.hash_user_ids = True from environment variable "
        "TACHIMETER_PRIVACY__HASH_USER_IDS: needs privacy.salt"
    )
    env = {"TACHIMETER_PRIVACY__HASH_USER_IDS": "true", "TACHIMETER_PRIVACY__SALT": SALT}
    assert load(tmp_path, env).privacy.salt == SALT


def test_salt_never_appears_in_errors(tmp_path: Path) -> None:
    message = config_error(tmp_path, {"TACHIMETER_PRIVACY__SALT": "short-secret"})
    assert "short-secret" not in message
    assert "privacy.salt = <hidden>" in message


def test_price_override_errors(tmp_path: Path) -> None:
    negative = {"m": {"input_per_mtok": -1, "output_per_mtok": 1}}
    assert config_error(tmp_path, **{"prices.overrides": negative}).startswith(
        "prices.overrides.m.input_per_mtok = -1 from keyword argument 'prices.overrides': "
        "must be a finite number >= 0"
    )
    missing = {"m": {"output_per_mtok": 1}}
    assert "missing required key 'input_per_mtok'" in config_error(
        tmp_path, **{"prices.overrides": missing}
    )
    unknown = {"m": {"input_per_mtok": 1, "output_per_mtok": 1, "cache_per_mtok": 1}}
    assert "unknown key; did you mean" in config_error(tmp_path, **{"prices.overrides": unknown})
    ok = load(
        tmp_path, **{"prices.overrides": {"m": ModelPrice(input_per_mtok=1, output_per_mtok=2)}}
    )
    assert ok.prices.overrides["m"].input_per_mtok == Decimal(1)


def test_table_expected_but_value_given(tmp_path: Path) -> None:
    assert config_error(tmp_path, collection=5) == (
        "collection = 5 from keyword argument 'collection': expected a table"
    )
    message = config_error(tmp_path, {"TACHIMETER_COLLECTION": "5"})
    assert "collection is a table; set one of its keys" in message


def test_setting_a_key_twice_in_keywords_is_an_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, collection={"buffer_size": 1}, **{"collection.buffer_size": 2})
    assert "collection.buffer_size is given twice" in message


def test_file_problems(tmp_path: Path) -> None:
    assert "does not exist" in config_error(tmp_path, path=tmp_path / "missing.toml")
    write(tmp_path / "tachimeter.toml", "[collection\n")
    assert re.search(r"tachimeter\.toml is not valid TOML: .*line 1", config_error(tmp_path))
    pyproject = write(tmp_path / "pyproject.toml", "[project]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"has no \[tool\.tachimeter\] table"):
        load_config(pyproject, env={})
    missing = {"TACHIMETER_CONFIG": str(tmp_path / "gone.toml")}
    assert "named by TACHIMETER_CONFIG" in config_error(tmp_path, missing)


# --- any input either loads or raises ConfigError --------------------------------------

KEYS = [
    "enabled", "disabled_categories", "disabled_event_types", "min_priority", "strict",
    "app_version", "sampling", "sampling.seed", "sampling.per_category",
    "sampling.per_category.error", "sampling.per_category.performance.rate",
    "sampling.per_event_type", "sampling.per_event_type.cpu_usage.min_per_window",
    "collection", "collection.buffer_size", "collection.flush_interval",
    "collection.backpressure", "collection.block_timeout", "collection.spool_dir",
    "privacy.extra_patterns", "privacy.drop_keys", "privacy.hash_user_ids", "privacy.salt",
    "storage.path", "storage.synchronous", "retention.days", "retention.days.metrics",
    "validation.max_event_bytes", "validation.clock_skew_seconds", "prices.overrides",
    "prices.overrides.m", "prices.overrides.m.input_per_mtok", "nonsense", "collection.nope",
]  # fmt: skip
ENV_NAMES = [env_var_name(tuple(key.split("."))) for key in KEYS] + [
    "TACHIMETER_DB",
    "TACHIMETER_DISABLED",
    "TACHIMETER_COLLECTION__BUFFER_SIZE__X",
    "TACHIMETER_",
    "TACHIMETER___",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["usage", "error", "low", "high", "block", "NORMAL", "(", "0.5", "7"])
    | st.sampled_from(list(EventCategory) + list(EventPriority))
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["rate", "min_per_window", "error", "m", "x", "buffer_size"])
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(st.sampled_from(KEYS), values, max_size=5))
def test_any_keyword_overrides_load_or_raise_config_error(
    empty_dir: Path, overrides: dict[str, object]
) -> None:
    try:
        config = load_config(env={}, cwd=empty_dir, **overrides)
    except ConfigError:
        return
    assert isinstance(config, AnalyticsConfig)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    env=st.dictionaries(
        st.sampled_from(ENV_NAMES),
        st.text(alphabet=string.printable, max_size=20)
        | st.sampled_from(["", "1", "0.5", "true", "[1, 2]", "{}", '{"a": 1}', "usage,error"]),
        max_size=5,
    )
)
def test_any_environment_loads_or_raises_config_error(empty_dir: Path, env: dict[str, str]) -> None:
    try:
        config = load_config(env=env, cwd=empty_dir)
    except ConfigError:
        return
    assert isinstance(config, AnalyticsConfig)
