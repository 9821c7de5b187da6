"""`minipacs init`: a commented config with the given values, checked, and an archive ready to serve."""

from __future__ import annotations

import tomllib
from pathlib import Path

from appliance.settings import DOCUMENTED_DEFAULTS, load
from tests.appliance.util import assert_one_line_error, run_cli
from tests.pg import PostgresServer


def test_init_writes_the_documented_config_with_the_values_given(tmp_path: Path) -> None:
    done = run_cli("init", "--data", str(tmp_path / "pacs"), "--aet", "PACS_HUYEN",
                   "--hospital-name", 'Bệnh viện "Đa khoa" huyện Cần Giuộc', cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "minipacs.toml").read_text(encoding="utf-8")
    assert written.count("\n#") == DOCUMENTED_DEFAULTS.read_text(encoding="utf-8").count("\n#")  # every comment kept
    parsed = tomllib.loads(written)
    assert parsed["dicom"]["ae_title"] == "PACS_HUYEN" and parsed["data"] == str(tmp_path / "pacs")
    assert parsed["reports"]["hospital_name"] == 'Bệnh viện "Đa khoa" huyện Cần Giuộc'
    settings = load(tmp_path / "minipacs.toml", {}, environ={})
    assert settings["dicom.ae_title"] == "PACS_HUYEN" and settings["dicom.port"] == 11112
    assert (tmp_path / "pacs" / "index.sqlite").is_file()  # the archive was opened: schema made
    assert "minipacs serve --config minipacs.toml" in done.stdout

    again = run_cli("init", cwd=tmp_path)
    assert_one_line_error(again, 1)
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert (tmp_path / "minipacs.toml").read_text(encoding="utf-8") == written  # untouched


def test_init_refuses_what_would_not_work_and_writes_nothing(tmp_path: Path, postgres: PostgresServer) -> None:
    bad_aet = run_cli("init", "--aet", "A TITLE LONGER THAN SIXTEEN", cwd=tmp_path)
    assert_one_line_error(bad_aet, 2)
    assert "dicom.ae_title" in bad_aet.stderr
    unreachable = run_cli("init", "--database-url", "postgresql+psycopg://u:secret@127.0.0.1:1/x", cwd=tmp_path)
    assert unreachable.returncode == 1 and "not written" in unreachable.stderr and "Traceback" not in unreachable.stderr
    assert not list(tmp_path.glob("*.toml")) and not list(tmp_path.glob(".*.new"))

    url = postgres.create_database()
    on_pg = run_cli("init", "site.toml", "--database-url", url, cwd=tmp_path)
    assert on_pg.returncode == 0, on_pg.stderr
    assert f"index: {url}" in on_pg.stdout  # (a URL with a password would show it as ***)
    assert load(tmp_path / "site.toml", {}, environ={}).database_url == url
    postgres.drop_database(url)
