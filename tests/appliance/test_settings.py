"""Settings: defaults < minipacs.toml < MINIPACS_* variables < flags, and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.settings import FLAGS, SPEC, SettingsError, env_name, load


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def toml_line(key: str, value: str) -> str:
    """`key = value` in its section; `value` is already TOML."""
    if "." in key:
        section, name = key.split(".", 1)
        return f"[{section}]\n{name} = {value}\n"
    return f"{key} = {value}\n"


# key, (TOML literal, parsed) for file, (text, parsed) for env, (flag value, parsed) for flag
PRECEDENCE = [
    ("data", ('"from-file"', "from-file"), ("from-env", "from-env"), ("from-flag", "from-flag")),
    ("dicom.port", ("1001", 1001), ("1002", 1002), (1003, 1003)),
    ("dicom.ae_title", ('"FILE_AE"', "FILE_AE"), (" ENV_AE ", "ENV_AE"), ("FLAG_AE", "FLAG_AE")),
    ("dicom.calling_ae", ('"registered"', "registered"), ("ANY", "any"), None),
    ("dicom.check_called_ae", ("true", True), ("no", False), None),
    ("dicom.acse_timeout", ("12.5", 12.5), ("7", 7.0), None),
    ("storage.reserve_mb", ("0", 0), ("2048", 2048), None),
    ("storage.url", ('"/srv/file-objects"', "/srv/file-objects"), ("/srv/env-objects", "/srv/env-objects"), None),
    ("log.level", ('"debug"', "DEBUG"), ("warning", "WARNING"), ("ERROR", "ERROR")),
    ("http.port", ("8081", 8081), ("8082", 8082), (8083, 8083)),
    ("hl7.port", ("2576", 2576), ("2577", 2577), (2578, 2578)),
]


@pytest.mark.parametrize("key, in_file, in_env, as_flag", PRECEDENCE, ids=[p[0] for p in PRECEDENCE])
def test_each_layer_wins_over_the_one_below(tmp_path: Path, key: str, in_file: tuple[str, Any],
                                            in_env: tuple[str, Any], as_flag: tuple[Any, Any] | None) -> None:  # fmt: skip
    config = write_toml(tmp_path / "minipacs.toml", toml_line(key, in_file[0]))
    env = {env_name(key): in_env[0]}

    defaults = load(environ={})
    assert defaults[key] == SPEC[key][1](SPEC[key][0])
    assert defaults.sources[key] == "default"

    from_file = load(config, environ={})
    assert from_file[key] == in_file[1]
    assert from_file.sources[key] == f"file {config}"

    from_env = load(config, environ=env)
    assert from_env[key] == in_env[1]
    assert from_env.sources[key] == env_name(key)

    if as_flag is not None:
        from_flag = load(config, {key: as_flag[0]}, environ=env)
        assert from_flag[key] == as_flag[1]
        assert from_flag.sources[key] == FLAGS[key]
        # A flag that was not given (None) leaves the environment's value.
        assert load(config, {key: None}, environ=env)[key] == in_env[1]


def test_keys_without_a_layer_keep_their_defaults(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "minipacs.toml", toml_line("dicom.port", "104"))
    settings = load(config, {"dicom.ae_title": "FLAG_AE"}, environ={"MINIPACS_LOG_LEVEL": "ERROR"})
    assert (settings["dicom.port"], settings["dicom.ae_title"], settings["log.level"]) == (104, "FLAG_AE", "ERROR")
    untouched = set(SPEC) - {"dicom.port", "dicom.ae_title", "log.level"}
    assert {key: settings[key] for key in untouched} == {key: load(environ={})[key] for key in untouched}


@pytest.mark.parametrize("key, name", [
    ("data", "MINIPACS_DATA"),
    ("dicom.port", "MINIPACS_DICOM_PORT"),
    ("dicom.ae_title", "MINIPACS_DICOM_AE_TITLE"),
    ("dicom.calling_ae", "MINIPACS_DICOM_CALLING_AE"),
    ("storage.url", "MINIPACS_STORAGE_URL"),
    ("storage.reserve_mb", "MINIPACS_STORAGE_RESERVE_MB"),
    ("database.url", "MINIPACS_DATABASE_URL"),
    ("log.level", "MINIPACS_LOG_LEVEL"),
])  # fmt: skip
def test_environment_variable_names(key: str, name: str) -> None:
    assert env_name(key) == name


def test_every_key_can_be_set_from_the_environment(tmp_path: Path) -> None:
    env = {
        "MINIPACS_DATA": str(tmp_path / "d"),
        "MINIPACS_DATABASE_URL": "sqlite:////srv/index.sqlite",
        "MINIPACS_STORAGE_URL": "/srv/objects",
        "MINIPACS_DICOM_HOST": "127.0.0.1",
    }
    settings = load(environ=env)
    assert settings.data_dir == tmp_path / "d"
    assert settings.database_url == "sqlite:////srv/index.sqlite"
    assert settings.storage_url == "/srv/objects"
    assert settings["dicom.host"] == "127.0.0.1"
    assert set(map(env_name, SPEC)) >= set(env)


def test_derived_locations_follow_the_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load(environ={"MINIPACS_DATA": "archive-here"})
    assert settings.data_dir == tmp_path / "archive-here"
    assert settings.database_url == f"sqlite:///{tmp_path / 'archive-here' / 'index.sqlite'}"
    assert settings.storage_url == str(tmp_path / "archive-here" / "objects")
    assert settings.spool_dir == tmp_path / "archive-here" / "spool"


# --- where the file comes from ------------------------------------------------------------


def test_minipacs_toml_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(tmp_path / "minipacs.toml", toml_line("dicom.port", "4242"))
    monkeypatch.chdir(tmp_path)
    settings = load(environ={})
    assert settings["dicom.port"] == 4242
    assert settings.config_file == Path("minipacs.toml")


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load(environ={})
    assert settings.config_file is None
    assert set(settings.sources.values()) == {"default"}


def test_minipacs_config_wins_over_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(tmp_path / "minipacs.toml", toml_line("dicom.port", "1111"))
    other = write_toml(tmp_path / "etc.toml", toml_line("dicom.port", "2222"))
    monkeypatch.chdir(tmp_path)
    settings = load(environ={"MINIPACS_CONFIG": str(other)})
    assert settings["dicom.port"] == 2222
    assert settings.config_file == other


def test_config_flag_wins_over_minipacs_config(tmp_path: Path) -> None:
    env_file = write_toml(tmp_path / "env.toml", toml_line("dicom.port", "2222"))
    flag_file = write_toml(tmp_path / "flag.toml", toml_line("dicom.port", "3333"))
    settings = load(flag_file, environ={"MINIPACS_CONFIG": str(env_file)})
    assert settings["dicom.port"] == 3333
    assert settings.config_file == flag_file


# --- bad values: the message names the key, the value and where it came from ---------------


def error_of(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        load(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


BAD_ENV = [
    ("MINIPACS_DICOM_PORT", "abc", "dicom.port", "port number"),
    ("MINIPACS_DICOM_PORT", "70000", "dicom.port", "port number"),
    ("MINIPACS_DICOM_PORT", "-1", "dicom.port", "port number"),
    ("MINIPACS_DICOM_PORT", "", "dicom.port", "port number"),
    ("MINIPACS_HTTP_PORT", "80.5", "http.port", "port number"),
    ("MINIPACS_DICOM_AE_TITLE", "WAY_TOO_LONG_AE_TITLE", "dicom.ae_title", "1-16"),
    ("MINIPACS_DICOM_AE_TITLE", "BAD\\AE", "dicom.ae_title", "backslash"),
    ("MINIPACS_DICOM_AE_TITLE", "   ", "dicom.ae_title", "1-16"),
    ("MINIPACS_DICOM_AE_TITLE", "BỆNH_VIỆN", "dicom.ae_title", "ASCII"),
    ("MINIPACS_DICOM_CHECK_CALLED_AE", "maybe", "dicom.check_called_ae", "true or false"),
    ("MINIPACS_DICOM_CALLING_AE", "some", "dicom.calling_ae", "any, registered"),
    ("MINIPACS_LOG_LEVEL", "LOUD", "log.level", "DEBUG, INFO, WARNING or ERROR"),
    ("MINIPACS_DICOM_ACSE_TIMEOUT", "0", "dicom.acse_timeout", "greater than 0"),
    ("MINIPACS_DICOM_DIMSE_TIMEOUT", "nan", "dicom.dimse_timeout", "greater than 0"),
    ("MINIPACS_DICOM_NETWORK_TIMEOUT", "inf", "dicom.network_timeout", "greater than 0"),
    ("MINIPACS_DICOM_NETWORK_TIMEOUT", "five", "dicom.network_timeout", "number"),
    ("MINIPACS_DICOM_MAX_ASSOCIATIONS", "0", "dicom.max_associations", "1 or more"),
    ("MINIPACS_STORAGE_RESERVE_MB", "-5", "storage.reserve_mb", "0 or more"),
    ("MINIPACS_STORAGE_RESERVE_MB", "1e3", "storage.reserve_mb", "whole number"),
    ("MINIPACS_DATA", "", "data", "directory"),
]


@pytest.mark.parametrize("name, value, key, why", BAD_ENV, ids=[f"{b[0]}={b[1]!r}" for b in BAD_ENV])
def test_bad_environment_value(name: str, value: str, key: str, why: str) -> None:
    message = error_of(environ={name: value})
    assert f"setting {key} = {value!r}" in message
    assert f"(from {name})" in message
    assert why in message


BAD_FILE = [
    ("dicom.port", '"abc"', "port number"),
    ("dicom.port", "70000", "port number"),
    ("dicom.port", "true", "port number"),  # int(True) would be port 1
    ("dicom.port", "104.5", "port number"),  # int(104.5) would be port 104
    ("dicom.ae_title", '"WAY_TOO_LONG_AE_TITLE"', "1-16"),
    ("dicom.check_called_ae", '"perhaps"', "true or false"),
    ("dicom.max_pdu", "-1", "0 or more"),
    ("dicom.acse_timeout", "-3", "greater than 0"),
    ("dicom.acse_timeout", "false", "number"),
    ("log.level", '"verbose"', "DEBUG, INFO"),
    ("data", "5", "text"),
    ("data", '""', "directory"),
    ("storage.url", '["s3://a"]', "text"),
    ("dicom.host", "127", "text"),
]


@pytest.mark.parametrize("key, literal, why", BAD_FILE, ids=[f"{b[0]}={b[1]}" for b in BAD_FILE])
def test_bad_file_value(tmp_path: Path, key: str, literal: str, why: str) -> None:
    config = write_toml(tmp_path / "minipacs.toml", toml_line(key, literal))
    message = error_of(config, environ={})
    assert f"setting {key} = " in message
    assert f"(from file {config})" in message
    assert why in message


@pytest.mark.parametrize("key, value, why", [
    ("dicom.port", 70000, "port number"),
    ("dicom.ae_title", "", "1-16"),
    ("log.level", "chatty", "DEBUG"),
    ("data", "", "directory"),
])  # fmt: skip
def test_bad_flag_value_names_the_flag(key: str, value: Any, why: str) -> None:
    message = error_of(None, {key: value}, environ={})
    assert f"setting {key} = {value!r} (from {FLAGS[key]})" in message
    assert why in message


def test_a_good_environment_value_does_not_hide_a_bad_file(tmp_path: Path) -> None:
    """The file is checked as a whole even when the environment overrides a key (it is
    the file the next start will use)."""
    config = write_toml(tmp_path / "minipacs.toml", "[dicom]\nprot = 104\n")
    message = error_of(config, environ={"MINIPACS_DICOM_PORT": "104"})
    assert "dicom.prot" in message


def test_unknown_key_in_the_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "minipacs.toml", "[dicom]\nport = 104\nprot = 105\n\n[htttp]\nport = 1\n")
    message = error_of(config, environ={})
    assert str(config) in message
    assert "unknown setting(s) dicom.prot, htttp.port" in message
    assert "minipacs.toml" in message


def test_invalid_toml(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "minipacs.toml", "[dicom]\nport 104\n")
    message = error_of(config, environ={})
    assert f"configuration file {config} is not valid TOML" in message
    assert "line 2" in message


def test_missing_config_file_from_the_flag(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.toml", environ={})
    assert str(tmp_path / "nope.toml") in message
    assert "--config" in message and "does not exist" in message


def test_missing_config_file_from_minipacs_config(tmp_path: Path) -> None:
    message = error_of(environ={"MINIPACS_CONFIG": str(tmp_path / "nope.toml")})
    assert str(tmp_path / "nope.toml") in message
    assert "MINIPACS_CONFIG" in message and "does not exist" in message


def test_invalid_toml_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(tmp_path / "minipacs.toml", "port = = 1\n")
    monkeypatch.chdir(tmp_path)
    assert "minipacs.toml is not valid TOML" in error_of(environ={})


# --- unknown MINIPACS_* variables -----------------------------------------------------------


def test_misspelt_environment_variable_is_reported() -> None:
    settings = load(environ={"MINIPACS_DICOM_PROT": "104"})
    assert settings["dicom.port"] == 11112
    assert len(settings.warnings) == 1
    assert "MINIPACS_DICOM_PROT" in settings.warnings[0]
    assert "did you mean MINIPACS_DICOM_PORT?" in settings.warnings[0]


def test_variables_that_are_not_settings_are_not_reported(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "c.toml", "")
    env = {"MINIPACS_CONFIG": str(config), "MINIPACS_TEST_NETNS": "1", "MINIPACS_DATA": "x", "PATH": "/bin"}
    assert load(environ=env).warnings == ()
