"""`minipacs` as a subprocess: help, usage errors and configuration errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.appliance.util import assert_one_line_error, cli_env, run_cli

HELP = [
    ([], ["serve", "demo", "import", "ae", "minipacs.toml", "examples"]),
    (["serve"], ["--config", "--data", "--log-level", "--aet", "--dicom-port", "--http-port", "--hl7-port"]),
    (["demo"], ["--config", "--data", "--log-level", "--aet", "--dicom-port", "--samples"]),
    (["import"], ["--config", "--data", "--log-level", "--no-progress", "PATH", "DICOMDIR"]),
    (["ae"], ["add", "list", "remove"]),
    (["ae", "add"], ["TITLE", "HOST", "PORT", "--description", "--data", "--config"]),
    (["ae", "list"], ["--data", "--config", "--log-level"]),
    (["ae", "remove"], ["TITLE", "--data", "--config"]),
]


@pytest.mark.parametrize("command, mentions", HELP, ids=[" ".join(h[0]) or "minipacs" for h in HELP])
def test_help(tmp_path: Path, command: list[str], mentions: list[str]) -> None:
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: minipacs {' '.join(command)}".rstrip())
    for word in mentions:
        assert word in result.stdout, f"{word} missing from `minipacs {' '.join(command)} --help`"
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == [], "--help must not create anything"


@pytest.mark.parametrize("command, usage", [
    ([], "usage: minipacs [-h] COMMAND"),
    (["ae"], "usage: minipacs ae [-h] ACTION"),
])  # fmt: skip
def test_no_command_prints_help_and_exits_2(tmp_path: Path, command: list[str], usage: str) -> None:
    result = run_cli(*command, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stdout.startswith(usage)
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("sevre", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'sevre'" in result.stderr
    assert "Traceback" not in result.stderr


def test_non_numeric_port_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--dicom-port", "abc", cwd=tmp_path)
    assert result.returncode == 2
    assert "--dicom-port: invalid int value: 'abc'" in result.stderr
    assert "Traceback" not in result.stderr


# --- configuration errors: exit 2, one line, no traceback -----------------------------------

CONFIG_ERRORS = [
    # (args, environment, minipacs.toml in the working directory, words in the message)
    (["ae", "list"], {"MINIPACS_DICOM_PORT": "abc"}, None,
     ["configuration error", "dicom.port", "'abc'", "MINIPACS_DICOM_PORT"]),
    (["serve", "--dicom-port", "70000"], {}, None,
     ["configuration error", "dicom.port", "70000", "--dicom-port", "0-65535"]),
    (["serve", "--aet", "A_MUCH_TOO_LONG_TITLE"], {}, None, ["dicom.ae_title", "--aet", "1-16"]),
    (["import", "x", "--log-level", "loud"], {}, None, ["log.level", "--log-level", "DEBUG"]),
    (["ae", "list"], {}, "[dicom]\ncheck_called_ae = \"maybe\"\n",
     ["dicom.check_called_ae", "file minipacs.toml", "true or false"]),
    (["ae", "list"], {}, "[dicom]\nprot = 104\n", ["unknown setting(s) dicom.prot"]),
    (["ae", "list"], {}, "[dicom\nport = 104\n", ["minipacs.toml is not valid TOML"]),
    (["ae", "list", "--config", "missing.toml"], {}, None, ["missing.toml", "--config", "does not exist"]),
    (["ae", "list"], {"MINIPACS_CONFIG": "missing.toml"}, None, ["missing.toml", "MINIPACS_CONFIG"]),
    (["ae", "list"], {"MINIPACS_DATA": ""}, None, ["setting data = ''", "MINIPACS_DATA"]),
]  # fmt: skip


@pytest.mark.parametrize("args, env, toml, words", CONFIG_ERRORS, ids=[str(i) for i in range(len(CONFIG_ERRORS))])
def test_configuration_error(tmp_path: Path, args: list[str], env: dict[str, str],
                             toml: str | None, words: list[str]) -> None:  # fmt: skip
    if toml is not None:
        (tmp_path / "minipacs.toml").write_text(toml)
    result = run_cli(*args, cwd=tmp_path, env=cli_env(**env))
    line = assert_one_line_error(result, 2)
    assert line.startswith("minipacs: configuration error: "), line
    for word in words:
        assert word in line, line
    assert not (tmp_path / "minipacs-data").exists(), "nothing is created when the settings are wrong"


def test_flag_wins_over_environment_and_file(tmp_path: Path) -> None:
    (tmp_path / "minipacs.toml").write_text('data = "from-toml"\n')
    env = cli_env(MINIPACS_DATA="from-env", MINIPACS_DICOM_PROT="104")
    from_env = run_cli("ae", "list", cwd=tmp_path, env=env)
    assert from_env.returncode == 0, from_env.stderr
    # A misspelt variable is not silently ignored.
    assert "ignoring the environment variable MINIPACS_DICOM_PROT" in from_env.stderr
    assert "did you mean MINIPACS_DICOM_PORT?" in from_env.stderr
    assert run_cli("ae", "list", "--data", "from-flag", cwd=tmp_path, env=env).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["from-env", "from-flag"]


def test_unusable_data_directory_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    result = run_cli("ae", "list", "--data", "a-file/data", cwd=tmp_path)
    line = assert_one_line_error(result, 1)
    assert f"cannot create the data directory {tmp_path / 'a-file' / 'data'}" in line
    assert "--data" in line
