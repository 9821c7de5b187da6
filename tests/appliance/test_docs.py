"""appliance/minipacs.toml documents every setting (in the style of datasette's test_docs.py).

The file is what an administrator copies and edits, so it must list every key
uncommented with its default, explain it, and hold no key the program lacks.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from appliance.settings import DOCUMENTED_DEFAULTS, FLAGS, SPEC, env_name, load

TEXT = DOCUMENTED_DEFAULTS.read_text(encoding="utf-8")


def documented_keys() -> dict[str, tuple[int, str]]:
    """key -> (line number, value text) of every uncommented `key = value` line."""
    keys: dict[str, tuple[int, str]] = {}
    section = ""
    for number, line in enumerate(TEXT.splitlines(), 1):
        if match := re.fullmatch(r"\[([a-z0-9_]+)\]\s*", line):
            section = match.group(1) + "."
        elif match := re.fullmatch(r"([a-z0-9_]+) = (.+)", line):
            keys[section + match.group(1)] = (number, match.group(2))
    return keys


def test_documented_defaults_is_the_file_next_to_settings() -> None:
    assert DOCUMENTED_DEFAULTS == Path(__file__).resolve().parents[2] / "appliance" / "minipacs.toml"


@pytest.mark.parametrize("key", list(SPEC))
def test_every_setting_is_documented_with_its_default(key: str) -> None:
    keys = documented_keys()
    assert key in keys, f"{key} is missing from appliance/minipacs.toml (uncommented, with its default)"
    default, parse = SPEC[key]
    _, literal = keys[key]
    value = tomllib.loads(f"v = {literal}")["v"]
    assert parse(value) == parse(default), f"{key}: the file says {literal}, the default is {default!r}"


def test_the_file_has_no_setting_the_program_lacks() -> None:
    assert set(documented_keys()) == set(SPEC)


def test_the_file_parses_to_exactly_the_settings() -> None:
    flat = {}
    for name, value in tomllib.loads(TEXT).items():
        if isinstance(value, dict):
            flat.update({f"{name}.{inner}": inner_value for inner, inner_value in value.items()})
        else:
            flat[name] = value
    assert set(flat) == set(SPEC)


def test_the_file_is_in_the_order_of_spec() -> None:
    keys = documented_keys()
    assert sorted(keys, key=lambda k: keys[k][0]) == list(SPEC)


def test_loading_the_documented_file_gives_the_defaults() -> None:
    settings = load(DOCUMENTED_DEFAULTS, environ={})
    assert settings.config_file == DOCUMENTED_DEFAULTS
    assert dict(settings.values) == {key: parse(default) for key, (default, parse) in SPEC.items()}
    assert set(settings.sources.values()) == {f"file {DOCUMENTED_DEFAULTS}"}


def test_every_setting_has_an_explanation() -> None:
    """Each block of key lines is preceded by a comment (keys may share one, like the timeouts)."""
    lines = TEXT.splitlines()
    for key, (number, _) in documented_keys().items():
        above = number - 2  # index of the line above
        while above >= 0 and re.fullmatch(r"[a-z0-9_]+ = .+", lines[above]):
            above -= 1
        assert above >= 0 and lines[above].startswith("#"), f"{key} has no comment above it"


def test_every_flag_is_named_in_the_file() -> None:
    named = set(re.findall(r"Flag: (--[a-z0-9-]+)", TEXT))
    assert named == set(FLAGS.values())


def test_the_environment_rule_is_documented() -> None:
    assert "MINIPACS_<SECTION>_<KEY>" in TEXT
    assert env_name("dicom.port") in TEXT
    assert env_name("data") in TEXT
    assert "MINIPACS_CONFIG" in TEXT
