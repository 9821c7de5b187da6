"""Retention: rules, the plan, deletion of images (study, order and report kept), legal hold, the CLI."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archive import Archive, InvalidArgument, Origin
from archive.audit import search
from archive.integrity import fsck
from archive.retention import Rule, delete_images, keep_days, parse_rules, plan, set_hold
from tests.appliance.util import assert_one_line_error, cli_env, run_cli
from tests.archive.helpers import make_dataset, part10, uid
from tests.conftest import CT_FILES, DX_FILE

ADMIN = Origin("cli:test", "", "CLI")
NOW = datetime(2026, 12, 6, tzinfo=UTC)


def test_rules() -> None:
    assert parse_rules("") == []
    assert parse_rules("CT:15y, us:1825d, *:20Y") == [Rule("CT", 15 * 365), Rule("US", 1825), Rule("*", 20 * 365)]
    for bad in ("CT", "CT:", "CT:15x", "CT:-1y", "CT:30d", "CT:10y, CT:12y", "C T:10y", "CT:10y;US:5y"):
        with pytest.raises(InvalidArgument):
            parse_rules(bad)
    rules = parse_rules("CT:15y, DX:10y")
    assert keep_days(rules, "CT") == 15 * 365 and keep_days(rules, "CT\\DX") == 15 * 365  # the longest wins
    assert keep_days(rules, "MR") is None and keep_days(rules, "CT\\MR") is None  # no rule: kept for ever
    assert keep_days(parse_rules("CT:15y, *:20y"), "MR") == 20 * 365


def store(archive: Archive, n: int, study_date: str, modality: str = "CT") -> str:
    study = uid(1, n)
    for i in range(2):
        ds = make_dataset(n * 10 + i, study=study, series=uid(2, n), modality=modality, pixel_bytes=64,
                          StudyDate=study_date, AccessionNumber=f"A{n}")  # fmt: skip
        archive.ingest(io.BytesIO(part10(ds)), ADMIN)
    return study


def test_old_images_go_the_study_stays_held_ones_stay(archive: Archive) -> None:
    old = store(archive, 1, "20080101")
    held = store(archive, 2, "20070101")
    young = store(archive, 3, "20200101")
    other = store(archive, 4, "20000101", modality="MR")  # no rule for MR: kept
    set_hold(archive.db, archive.audit, held, True, "khiếu nại số 12/2026", ADMIN)
    with pytest.raises(InvalidArgument):
        set_hold(archive.db, archive.audit, young, True, "  ", ADMIN)  # a hold needs a reason
    rules = parse_rules("CT:15y")
    due, on_hold = plan(archive.db, rules, NOW)
    assert [d.study_instance_uid for d in due] == [old] and on_hold == 1
    assert delete_images(archive.db, archive.objects, archive.audit, due[0], ADMIN) == 2
    assert plan(archive.db, rules, NOW) == ([], 1)
    with archive.db.read() as conn:
        from sqlalchemy import text

        rows = dict(conn.execute(text("SELECT study_instance_uid, num_instances FROM study")).all())
    assert rows == {old: 0, held: 2, young: 2, other: 2}  # the study row (its order, its report) stays
    assert fsck(archive.db, archive.objects, archive.audit).clean  # the objects went too: no orphans
    archive.audit.flush()
    [event] = search(archive.db, action="RETENTION_DELETE")
    assert event.uid == old and "2 images" in event.detail
    assert {e.action for e in search(archive.db, uid=held)} >= {"LEGAL_HOLD"}
    set_hold(archive.db, archive.audit, held, False, "đã giải quyết", ADMIN)
    assert [d.study_instance_uid for d in plan(archive.db, rules, NOW)[0]] == [held]
    store(archive, 1, "20080101")  # the images sent again: the study has images again
    assert old in [d.study_instance_uid for d in plan(archive.db, rules, NOW)[0]]


def test_a_hold_placed_after_the_plan_wins(archive: Archive) -> None:
    study = store(archive, 1, "20000101")
    [due], _ = plan(archive.db, parse_rules("CT:10y"), NOW)
    set_hold(archive.db, archive.audit, study, True, "tòa án", ADMIN)
    assert delete_images(archive.db, archive.objects, archive.audit, due, ADMIN) == 0
    assert archive.statistics().instances == 2


def test_minipacs_retention_command(tmp_path: Path) -> None:
    assert run_cli("import", CT_FILES[0], DX_FILE, "--data", "data", "--no-progress", cwd=tmp_path).returncode == 0
    none = run_cli("retention", "--data", "data", cwd=tmp_path)
    assert none.returncode == 0 and "kept for ever" in none.stdout
    # The samples are from November 2026: a one-year rule deletes nothing yet.
    young = run_cli("retention", "--dry-run", "--data", "data", cwd=tmp_path, env=cli_env(MINIPACS_RETENTION_RULES="*:1y"))
    assert young.returncode == 0 and "would delete the images of 0 studies" in young.stdout
    bad = run_cli("retention", "--data", "data", cwd=tmp_path, env=cli_env(MINIPACS_RETENTION_RULES="CT:forever"))
    assert_one_line_error(bad, 2)
    assert "retention.rules" in bad.stderr
    hold = run_cli("study", "hold", "2.25.201267940079897072368978825170084415160", "--reason", "khiếu nại",
                   "--data", "data", cwd=tmp_path)  # fmt: skip
    assert hold.returncode == 0 and "legal hold" in hold.stdout
    missing = run_cli("study", "hold", "1.2.3", "--reason", "x", "--data", "data", cwd=tmp_path)
    assert_one_line_error(missing, 1)


def test_minipacs_retention_deletes_what_the_dry_run_listed(tmp_path: Path) -> None:
    old = tmp_path / "old.dcm"
    old.write_bytes(part10(make_dataset(1, study=uid(1, 9), pixel_bytes=64, StudyDate="19990101")))
    assert run_cli("import", old, CT_FILES[0], "--data", "data", "--no-progress", cwd=tmp_path).returncode == 0
    env = cli_env(MINIPACS_RETENTION_RULES="CT:10y")
    dry = run_cli("retention", "--dry-run", "--data", "data", cwd=tmp_path, env=env)
    assert dry.returncode == 0 and uid(1, 9) in dry.stdout and "would delete the images of 1 studies" in dry.stdout
    done = run_cli("retention", "--no-progress", "--data", "data", cwd=tmp_path, env=env)
    assert done.returncode == 0 and "deleted the images of 1 studies (1 images" in done.stdout, done.stderr
    again = run_cli("retention", "--dry-run", "--data", "data", cwd=tmp_path, env=env)
    assert "would delete the images of 0 studies" in again.stdout
    assert run_cli("fsck", "--data", "data", "--no-progress", cwd=tmp_path).returncode == 0
