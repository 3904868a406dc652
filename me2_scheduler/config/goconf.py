"""go-zero's ``conf.Load(path, &c, conf.UseEnv())`` for frozen dataclasses.

- ``$VAR`` and ``${VAR}`` are expanded in the file's text before it is parsed,
  with Go's ``os.ExpandEnv`` rules (an unset variable becomes ""; ``$$`` and
  ``$1`` are variables too). Quote a value whose variable may hold YAML
  syntax: ``Pass: "${REDIS_PASS}"``.
- Keys match case-insensitively; unknown keys are ignored; a key given twice
  in different cases is an error. A key with no value (``Pass:``, or an unset
  variable) keeps its default.
- Scalars are YAML 1.2 core, as go-zero's yaml.v3 reads them: ``yes``/``no``/
  ``on``/``off`` are strings. Types are strict, as go-zero's: a number where a
  string is expected is an error (quote it).

Every problem is a ``ConfigError`` whose key is the dotted go-zero key path,
or the file path for whole-file problems (unreadable, empty, not YAML).
"""

from __future__ import annotations

import json
import math
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import Field, fields, is_dataclass
from typing import Any

import yaml

from me2_scheduler.errors import ConfigError

KeyOf = Callable[[Field], "str | None"]  # a field's go-zero key, None when not read from YAML

_ENV_REF = re.compile(r"\$(?:\{([^}]*)\}|(\{)|([*#$@!?\-0-9])|(\w+))", re.ASCII)


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Expand ``$VAR`` and ``${VAR}`` as Go's ``os.ExpandEnv`` does (unset → "")."""
    source = os.environ if env is None else env

    def value(match: re.Match[str]) -> str:
        braced, unclosed, special, plain = match.groups()
        name = braced if braced is not None else (special or plain)
        return "" if unclosed or not name else source.get(name, "")

    return _ENV_REF.sub(value, text)


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are YAML 1.2's (``true``/``false``), as go-zero's yaml.v3."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text as go-zero does; raise ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass: safe


def scalar(value: Any) -> str:
    """A YAML scalar that reads back as ``value`` (quoted only when it must be)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
        return f"{value:.20f}".rstrip("0") if "e" in text else text
    if not isinstance(value, str):
        return str(value)
    try:
        plain = parse_yaml(value) == value
    except Exception:  # any YAML error means the plain form is unusable
        plain = False
    return value if plain and value.strip() == value else json.dumps(value, ensure_ascii=False)


def read_yaml(path: str) -> dict[Any, Any]:
    """The file's top-level mapping, env-expanded; raise ``ConfigError`` keyed by the path."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise ConfigError(path, "cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = parse_yaml(expand_env(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(path, f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"invalid YAML: {exc}") from None
    if data is None:
        raise ConfigError(path, "is empty")
    if not isinstance(data, dict):
        raise ConfigError(path, f"the top level must be a mapping of keys, got {_kind(data)}")
    return data


_KINDS = (
    (bool, "a boolean"),  # before int: a bool is an int
    (dict, "a mapping"),
    (list, "a list"),
    (str, "a string"),
    ((int, float), "a number"),
)


def _kind(value: Any) -> str:
    """What a YAML value is, for a message that must not quote it."""
    return next((name for t, name in _KINDS if isinstance(value, t)), type(value).__name__)


def _expect(path: str, wanted: str, value: Any, hint: str = "") -> ConfigError:
    # Never the value itself: it may be a secret.
    return ConfigError(path, f"expected {wanted}, got {_kind(value)}{hint}")


def _as_str(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    quotable = not isinstance(value, (dict, list))
    raise _expect(path, "a string", value, " (quote it)" if quotable else "")


def _as_int(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _expect(path, "an integer", value)


def _as_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _expect(path, "true or false", value)


def _as_float(value: Any, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise _expect(path, "a finite number", value)


def _as_strings(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _expect(path, "a list", value)
    return tuple(_as_str(item, f"{path}[{i}]") for i, item in enumerate(value))


_CONVERTERS: dict[Any, Callable[[Any, str], Any]] = {
    str: _as_str,
    int: _as_int,
    float: _as_float,
    bool: _as_bool,
    tuple[str, ...]: _as_strings,
}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fold_keys(raw: dict[Any, Any], path: str) -> dict[str, Any]:
    folded: dict[str, Any] = {}
    for key, value in raw.items():
        if str(key).lower() in folded:
            raise ConfigError(_join(path, str(key)), "given twice (keys are case-insensitive)")
        folded[str(key).lower()] = value
    return folded


def build(cls: type, raw: Any, key_of: KeyOf, path: str = "") -> Any:
    """An instance of dataclass ``cls`` from a YAML mapping; raise ``ConfigError`` on a type error.

    Absent and null keys keep the field's default; unknown keys are ignored.
    """
    if not isinstance(raw, dict):
        raise _expect(path or "<top level>", "a mapping", raw)
    given = _fold_keys(raw, path)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        key = key_of(f)
        if key is None or given.get(key.lower()) is None:
            continue
        hint, value, where = hints[f.name], given[key.lower()], _join(path, key)
        if is_dataclass(hint):
            values[f.name] = build(hint, value, key_of, where)  # type: ignore[arg-type]
        else:
            values[f.name] = _CONVERTERS[hint](value, where)
    return cls(**values)
