"""Where configuration comes from, and how the sources combine.

Lowest to highest precedence:

1. the defaults of :class:`~tachimeter.config.settings.AnalyticsConfig`;
2. one file: ``tachimeter.toml`` in the directory searched, else the ``[tool.tachimeter]``
   table of ``pyproject.toml`` there (when both exist, ``tachimeter.toml`` is used and
   ``pyproject.toml`` is not read). The directory is ``cwd`` (default: the current
   directory); ``path`` or ``$TACHIMETER_CONFIG`` name a file or a directory instead;
3. ``TACHIMETER_*`` environment variables: levels separated by a double underscore,
   ``TACHIMETER_COLLECTION__BUFFER_SIZE=500``;
4. keyword arguments to :func:`load_config`: nested dicts or dotted names,
   ``load_config(collection={"buffer_size": 10})`` or
   ``load_config(**{"collection.buffer_size": 10})``.

Tables merge key by key; any other value (a number, a list) replaces the one below it.
Each value remembers its source, so an error names the key, the value, the file, variable
or argument it came from, and what is accepted::

    collection.backpressure = 'dorp' from environment variable
    TACHIMETER_COLLECTION__BACKPRESSURE: expected one of 'drop_lowest_priority', 'block', 'spill'

Environment values are text and are converted to the setting's type: booleans are
``true``/``false``/``1``/``0``; a list is comma-separated or a JSON array (``[`` first, for
items containing commas); a table is a JSON object (``{`` first); an empty value is None
for a setting that may be None and the empty list for a list. ``docs/configuration.md``
lists every variable.
"""

from __future__ import annotations

import enum
import functools
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Final, Literal, get_args, get_origin, get_type_hints

import msgspec

from tachimeter.config.settings import AnalyticsConfig, SettingError, format_key, show_value
from tachimeter.errors import ConfigError
from tachimeter.model.event_types import (
    EventCategory,
    default_sampling_for,
    event_type_from_name,
)

__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_ALIASES",
    "ENV_CONFIG_FILE",
    "ENV_NOT_SETTINGS",
    "ENV_PREFIX",
    "env_var_name",
    "load_config",
]

ENV_PREFIX: Final = "TACHIMETER_"
ENV_CONFIG_FILE: Final = "TACHIMETER_CONFIG"
CONFIG_FILE_NAME: Final = "tachimeter.toml"
_PYPROJECT: Final = "pyproject.toml"

# Short names for the two settings people set by hand most often.
ENV_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "TACHIMETER_DB": ("storage", "path"),
    # The negation of TACHIMETER_ENABLED: TACHIMETER_DISABLED=1 switches collection off.
    "TACHIMETER_DISABLED": ("enabled",),
}
_NEGATED_ALIASES: Final = frozenset({"TACHIMETER_DISABLED"})

# TACHIMETER_ variables that are not settings: read elsewhere (or, for TACHIMETER_CONFIG,
# here, to find the file). Any other unknown TACHIMETER_ variable is an error, because it
# is almost always a misspelt setting that would otherwise be ignored.
ENV_NOT_SETTINGS: Final = frozenset(
    {
        ENV_CONFIG_FILE,
        # The key the HTTP sink and the CLI send to a Tachimeter server: a secret, so it is
        # read from the environment by its user and never put in a configuration file.
        "TACHIMETER_API_KEY",
        # The test suite's switch to skip tests that need Debian binaries (promtool, ...).
        "TACHIMETER_NO_SYSTEM_DEPS",
    }
)

# Settings that are file paths: "~" is expanded and, when written in a file, a relative
# path is taken relative to that file, not to whatever directory the process started in.
_PATH_KEYS: Final = frozenset(
    {("storage", "path"), ("collection", "spool_dir"), ("collection", "dead_letter_path")}
)
_SECRET_KEYS: Final = frozenset({("privacy", "salt")})

# How SamplingConfig and ModelPrice word their own errors: "sampling.rate must be in
# [0, 1], got 1.5". The field and the bound are reused in our message.
_MODEL_MESSAGE: Final = re.compile(r"\w+\.(\w+) (must .+), got .+", re.DOTALL)
_MISSING_FIELD: Final = re.compile(r"Object missing required field `(\w+)`")
_ITEM_PATH: Final = re.compile(r"\$\[(\d+)\]")

Key = tuple[str, ...]
"""A setting's path from the top of AnalyticsConfig, without list indices."""

Entry = tuple[object, str]
"""A value and a description of where it came from."""


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    **overrides: object,
) -> AnalyticsConfig:
    """Build the configuration from defaults, a file, the environment and ``overrides``.

    ``path`` is a configuration file (``tachimeter.toml``-style, or a ``pyproject.toml``
    with a ``[tool.tachimeter]`` table) or a directory to search; by default
    ``$TACHIMETER_CONFIG``, else ``cwd``, else the current directory is searched. ``env``
    defaults to ``os.environ``. Raises :class:`~tachimeter.errors.ConfigError` naming the
    key, the value, its source and what is allowed.

    >>> config = load_config(env={"TACHIMETER_COLLECTION__BUFFER_SIZE": "500"},
    ...                      **{"collection.flush_interval": 1})
    >>> config.collection.buffer_size, config.collection.flush_interval
    (500, 1.0)
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    layers = [
        _file_layer(environ, path, cwd),
        _env_layer(environ),
        _overrides_layer(overrides),
    ]
    merged: dict[Key, Entry] = {}
    for layer in layers:
        for key, entry in layer.items():
            _put(merged, key, entry)
    tree = _unflatten(merged)
    _fill_sampling_rules(tree)
    origins = {key: origin for key, (_, origin) in merged.items()}
    config = _check(tree, AnalyticsConfig, (), origins)
    assert isinstance(config, AnalyticsConfig)
    return config


def env_var_name(key: Key) -> str:
    """The environment variable that sets ``key``: ``TACHIMETER_COLLECTION__BUFFER_SIZE``.

    >>> env_var_name(("sampling", "per_category", "performance", "rate"))
    'TACHIMETER_SAMPLING__PER_CATEGORY__PERFORMANCE__RATE'
    """
    return ENV_PREFIX + "__".join(part.upper() for part in key)


# --- the schema, read from the structs' type hints -------------------------------------


@functools.cache
def _fields(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """A struct's fields and their resolved types, in declaration order."""
    hints = get_type_hints(struct)
    return {name: hints[name] for name in struct.__struct_fields__}


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) is UnionType:
        args = [arg for arg in get_args(tp) if arg is not NoneType]
        if len(args) == 1:
            return args[0]
    return tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _is_table(tp: Any) -> bool:
    return _is_struct(tp) or get_origin(tp) is dict


def _is_list(tp: Any) -> bool:
    return get_origin(tp) in (tuple, frozenset, list, set)


def _choices(tp: Any) -> tuple[str, ...] | None:
    """The allowed values of a Literal or an Enum, else None."""
    if get_origin(tp) is Literal:
        return tuple(str(arg) for arg in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tuple(str(member.value) for member in tp)
    return None


def _children(tp: Any) -> dict[str, Any] | None:
    """The keys a table may hold and their types; None for a table with free keys."""
    tp = _strip_optional(tp)
    if _is_struct(tp):
        return _fields(tp)
    if get_origin(tp) is dict:
        key_type, value_type = get_args(tp)
        keys = _choices(key_type)
        return None if keys is None else dict.fromkeys(keys, value_type)
    return {}


def _child_type(tp: Any, key: str) -> Any | None:
    """The type under ``key`` in a table of type ``tp``; None when ``key`` is not allowed."""
    children = _children(tp)
    if children is None:
        return get_args(_strip_optional(tp))[1]
    return children.get(key)


def _paths_under(tp: Any) -> list[Key]:
    """Every key path below a table whose keys are known, for "did you mean"."""
    paths: list[Key] = []
    for key, child in (_children(tp) or {}).items():
        paths.append((key,))
        paths.extend((key, *rest) for rest in _paths_under(child))
    return paths


def _describe(tp: Any) -> str:
    """What a value of type ``tp`` looks like, for "expected ..."."""
    tp = _strip_optional(tp)
    choices = _choices(tp)
    if choices is not None:
        return "one of " + ", ".join(repr(choice) for choice in choices)
    if _is_list(tp):
        item = get_args(tp)[0]
        item_choices = _choices(item)
        if item_choices is not None:
            return "a list of values among " + ", ".join(repr(c) for c in item_choices)
        return f"a list of {_describe(item).removeprefix('a ').removeprefix('an ')}s"
    if _is_table(tp):
        return "a table"
    names = {bool: "true or false", int: "an integer", float: "a number", Decimal: "a number"}
    return names.get(tp, "a string")


def _suggest(query: str, candidates: list[Key], joiner: str) -> Key | None:
    # difflib is only needed to word an error; importing it here keeps it off start-up.
    import difflib

    by_text = {joiner.join(path): path for path in candidates}
    match = difflib.get_close_matches(query, list(by_text), n=1, cutoff=0.6)
    return by_text[match[0]] if match else None


# --- the layers: each maps a leaf's key to its value and origin ------------------------


def _put(layer: dict[Key, Entry], key: Key, entry: Entry) -> None:
    """Set ``key``, dropping what it replaces: a value at a prefix, or values below it."""
    for existing in [k for k in layer if k[: len(key)] == key or key[: len(k)] == k]:
        del layer[existing]
    layer[key] = entry


def _flatten(value: object, key: Key, origin: str, out: dict[Key, Entry]) -> None:
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value)
    if isinstance(value, Mapping):
        for name, child in value.items():
            if isinstance(name, enum.Enum):
                name = name.value
            if not isinstance(name, str) or not name:
                raise ConfigError(
                    f"{format_key(key) or 'configuration'} from {origin}: keys must be "
                    f"non-empty strings, got {name!r}"
                )
            _flatten(child, (*key, name), origin, out)
        return
    _put(out, key, (value, origin))


def _file_layer(
    env: Mapping[str, str],
    path: str | os.PathLike[str] | None,
    cwd: str | os.PathLike[str] | None,
) -> dict[Key, Entry]:
    if path is not None:
        named, how = Path(path), "passed as path"
    elif env.get(ENV_CONFIG_FILE):
        named, how = Path(env[ENV_CONFIG_FILE]), f"named by {ENV_CONFIG_FILE}"
    else:
        return _search(Path.cwd() if cwd is None else Path(cwd))
    named = named.expanduser()
    if named.is_dir():
        return _search(named)
    if not named.exists():
        raise ConfigError(f"configuration file {named} ({how}) does not exist")
    return _read(named, required=True)


def _search(directory: Path) -> dict[Key, Entry]:
    for name in (CONFIG_FILE_NAME, _PYPROJECT):
        candidate = directory / name
        if candidate.is_file():
            return _read(candidate, required=False)
    return {}


def _read(file: Path, *, required: bool) -> dict[Key, Entry]:
    # Deferred: most processes have no configuration file, and tomllib costs ~3 ms.
    import tomllib

    file = file.absolute()
    try:
        with file.open("rb") as stream:
            data: dict[str, Any] = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    origin = str(file)
    if file.name == _PYPROJECT:
        tool = data.get("tool")
        table = tool.get("tachimeter") if isinstance(tool, dict) else None
        if table is None:
            if required:
                raise ConfigError(f"{file} has no [tool.tachimeter] table")
            return {}
        origin = f"{file} [tool.tachimeter]"
        if not isinstance(table, dict):
            raise ConfigError(f"tool.tachimeter in {file} must be a table, got {table!r}")
        data = table
    layer: dict[Key, Entry] = {}
    _flatten(data, (), origin, layer)
    for key in _PATH_KEYS & layer.keys():
        value, _ = layer[key]
        if isinstance(value, str) and value.strip():
            layer[key] = (str(file.parent / os.path.expanduser(value)), origin)
    return layer


def _env_layer(env: Mapping[str, str]) -> dict[Key, Entry]:
    layer: dict[Key, Entry] = {}
    set_by: dict[Key, str] = {}
    # Sorted, so a variable for one key of a table wins over a JSON object for the table.
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        origin = f"environment variable {name}"
        key = ENV_ALIASES.get(name) or tuple(
            part.lower() for part in name.removeprefix(ENV_PREFIX).split("__")
        )
        tp = _env_type(name, key)
        if key in set_by:
            raise ConfigError(
                f"environment variables {set_by[key]} and {name} both set "
                f"{format_key(key)}; set only one"
            )
        set_by[key] = name
        value = _parse_env_value(env[name], tp, key, origin)
        if name in _NEGATED_ALIASES:
            value = not value
        entries: dict[Key, Entry] = {}
        _flatten(value, key, origin, entries)
        for leaf, entry in entries.items():
            _put(layer, leaf, entry)
    return layer


def _env_type(name: str, key: Key) -> Any:
    """The type of the setting ``key``, or a ConfigError suggesting the right variable."""
    tp: Any = AnalyticsConfig
    for depth, part in enumerate(key):
        if not _is_table(_strip_optional(tp)):
            raise ConfigError(
                f"environment variable {name} is not a Tachimeter setting: "
                f"{format_key(key[:depth])} has no keys below it; did you mean "
                f"{env_var_name(key[:depth])}?"
            )
        child = _child_type(tp, part) if part else None
        if child is None:
            candidates = _paths_under(tp)
            if depth == 0:
                extra = ENV_ALIASES.keys() | ENV_NOT_SETTINGS
                candidates += [(n.removeprefix(ENV_PREFIX).lower(),) for n in extra]
            fix = _suggest("__".join(key[depth:]), candidates, "__")
            hint = f"; did you mean {env_var_name(key[:depth] + fix)}?" if fix else ""
            after = env_var_name(key[:depth]) + "__" if depth else ENV_PREFIX
            known = ", ".join(k.upper() for k in _children(tp) or {}) or "any name"
            raise ConfigError(
                f"environment variable {name} is not a Tachimeter setting{hint} "
                f"(known names after {after}: {known})"
            )
        tp = child
    return tp


def _parse_env_value(raw: str, tp: Any, key: Key, origin: str) -> object:
    base = _strip_optional(tp)
    value: object = raw if base is str else raw.strip()
    if _is_table(base):
        if not raw.lstrip().startswith("{"):
            raise ConfigError(
                f"{format_key(key)} = {raw!r} from {origin}: {format_key(key)} is a table; "
                f"set one of its keys ({env_var_name(key)}__<KEY>) or give a JSON object"
            )
        return _decode_json(raw, key, origin)
    if raw == "" and base is not tp:
        return None
    if _is_list(base):
        text = raw.strip()
        if text.startswith("["):
            value = _decode_json(text, key, origin)
        else:
            value = [item.strip() for item in text.split(",") if item.strip()]
    try:
        converted = msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError as exc:
        raise _translate(exc, value, tp, key, {key: origin}) from exc
    return msgspec.to_builtins(converted)


def _decode_json(text: str, key: Key, origin: str) -> object:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{format_key(key)} from {origin}: not valid JSON: {exc}") from exc


def _overrides_layer(overrides: Mapping[str, object]) -> dict[Key, Entry]:
    layer: dict[Key, Entry] = {}
    given_as: dict[Key, str] = {}
    for name, value in overrides.items():
        key = tuple(name.split("."))
        if not all(key):
            raise ConfigError(f"keyword argument {name!r} is not a setting name")
        entries: dict[Key, Entry] = {}
        _flatten(value, key, f"keyword argument {name!r}", entries)
        for leaf, entry in entries.items():
            if leaf in given_as:
                raise ConfigError(
                    f"{format_key(leaf)} is given twice, by keyword arguments "
                    f"{given_as[leaf]!r} and {name!r}"
                )
            given_as[leaf] = name
            _put(layer, leaf, entry)
    return layer


def _unflatten(merged: Mapping[Key, Entry]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, (value, _) in merged.items():
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    return tree


def _fill_sampling_rules(tree: dict[str, Any]) -> None:
    """Complete partial sampling rules from what the event would get without them.

    ``[sampling.per_category.error] rate = 0.5`` keeps spec 406's ``min_per_window = 100``
    for errors rather than SamplingConfig's generic 1. A rule for an event name inherits
    from its category's rule, or from the type's default. Malformed input is left for
    ``_check`` to report.
    """
    sampling = tree.get("sampling")
    if not isinstance(sampling, dict):
        return
    per_category = sampling.get("per_category")
    per_category = per_category if isinstance(per_category, dict) else {}
    categories = {c.value: c for c in EventCategory}
    for name, rule in per_category.items():
        if isinstance(rule, dict) and name in categories:
            default = msgspec.to_builtins(default_sampling_for(categories[name]))
            per_category[name] = {**default, **rule}
    per_event_type = sampling.get("per_event_type")
    if not isinstance(per_event_type, dict):
        return
    for name, rule in per_event_type.items():
        if not isinstance(rule, dict):
            continue
        event_type = event_type_from_name(name)
        base = per_category.get(event_type.category().value)
        if not isinstance(base, dict):
            base = msgspec.to_builtins(event_type.default_sampling())
        per_event_type[name] = {**base, **rule}


# --- validation with sources in the messages -------------------------------------------


def _check(node: object, tp: Any, key: Key, origins: Mapping[Key, str]) -> Any:
    """Check ``node`` against ``tp`` depth first, so the first error has an exact key.

    Returns the converted value for structs and leaves (the whole AnalyticsConfig at the
    top), ``node`` itself for dicts.
    """
    base = _strip_optional(tp)
    if not _is_table(base) or (node is None and base is not tp):
        return _convert(node, tp, key, origins)
    if not isinstance(node, dict):
        raise _value_error(key, node, f"expected {_describe(base)}", origins)
    children = _children(base)
    if children is not None:
        for name in node:
            if name not in children:
                raise _unknown_key((*key, name), base, origins)
        for name, child_type in children.items():
            if name in node:
                _check(node[name], child_type, (*key, name), origins)
    else:
        value_type = get_args(base)[1]
        for name, child in node.items():
            _check(child, value_type, (*key, name), origins)
    return _convert(node, base, key, origins) if _is_struct(base) else node


def _convert(node: object, tp: Any, key: Key, origins: Mapping[Key, str]) -> Any:
    try:
        return msgspec.convert(node, tp)
    except msgspec.ValidationError as exc:
        raise _translate(exc, node, tp, key, origins) from exc


def _translate(
    exc: msgspec.ValidationError,
    node: object,
    tp: Any,
    key: Key,
    origins: Mapping[Key, str],
) -> ConfigError:
    """Reword a msgspec error about ``node`` (at ``key``) with the value's source."""
    cause = exc.__cause__
    if isinstance(cause, SettingError):
        return _value_error(cause.key, cause.value, cause.expected, origins, cause.secret)
    if isinstance(cause, ConfigError):
        match = _MODEL_MESSAGE.fullmatch(str(cause))
        if match and isinstance(node, dict) and match[1] in node:
            return _value_error((*key, match[1]), node[match[1]], match[2], origins)
        return ConfigError(f"{format_key(key)} from {_origin(key, origins)}: {cause}")
    message, _, where = str(exc).partition(" - at `")
    missing = _MISSING_FIELD.fullmatch(message)
    if missing:
        return ConfigError(
            f"{format_key(key)} from {_origin(key, origins)}: missing required key {missing[1]!r}"
        )
    item = _ITEM_PATH.match(where)
    if item and isinstance(node, (list, tuple)) and _is_list(_strip_optional(tp)):
        index = int(item[1])
        item_type = get_args(_strip_optional(tp))[0]
        return _value_error((*key, index), node[index], f"expected {_describe(item_type)}", origins)
    return _value_error(key, node, f"expected {_describe(tp)}", origins)


def _value_error(
    key: tuple[str | int, ...],
    value: object,
    expected: str,
    origins: Mapping[Key, str],
    secret: bool = False,
) -> ConfigError:
    names = tuple(part for part in key if isinstance(part, str))
    shown = show_value(value, secret=secret or names in _SECRET_KEYS)
    return ConfigError(f"{format_key(key)} = {shown} from {_origin(key, origins)}: {expected}")


def _unknown_key(key: Key, table: Any, origins: Mapping[Key, str]) -> ConfigError:
    known = ", ".join(_children(table) or {})
    fix = _suggest(key[-1], _paths_under(table), ".")
    hint = f"; did you mean {format_key(key[:-1] + fix)!r}?" if fix else ""
    where = f" in {format_key(key[:-1])}" if len(key) > 1 else ""
    return ConfigError(
        f"{format_key(key)} from {_origin(key, origins)}: unknown key{hint} "
        f"(known keys{where}: {known})"
    )


def _origin(key: tuple[str | int, ...], origins: Mapping[Key, str]) -> str:
    """Where the value at ``key`` (or, for a table, the values under it) came from."""
    names: Key = ()
    for part in key:
        if not isinstance(part, str):
            break
        names = (*names, part)
    for length in range(len(names), 0, -1):
        if names[:length] in origins:
            return origins[names[:length]]
    below = sorted({origin for k, origin in origins.items() if k[: len(names)] == names})
    return " and ".join(below) if below else "the defaults"
