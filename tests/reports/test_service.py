"""The report service on a real index (SQLite and PostgreSQL): drafts, templates, locking, search.

Signing, amendments and their outputs are in test_signoff.py (they need the test CA).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from archive import Archive
from archive.errors import InvalidArgument, NotFound
from reports.errors import ReportStateError, StaleReport
from reports.service import Reports
from reports.types import SECTIONS, ReportDraft, ReportStatus
from tests.archive.helpers import ingest_ds, make_dataset, table_rows, uid
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)
from tests.reports.service_helpers import ACCESSION, RADIOLOGIST, STUDY_UID, Setup, add_users, ordered_study
from worklist.service import Worklist


@pytest.fixture
def setup(archive: Archive) -> Iterator[Setup]:
    add_users(archive)
    worklist = Worklist(archive)
    ordered_study(archive, worklist)
    yield Setup(archive, worklist, Reports(archive))


def test_a_draft_starts_from_a_template_and_carries_the_order(setup: Setup) -> None:
    view = setup.reports.create(STUDY_UID, ReportDraft(template_id="ct-so-nao-vi"), RADIOLOGIST)
    assert view.accession_number == ACCESSION and view.status is ReportStatus.DRAFT and view.revision == 1
    template = setup.reports.templates.get("ct-so-nao-vi")
    assert view.version.section("conclusion") == template.sections["conclusion"]
    assert view.version.language == "vi" and view.version.author_name == "BS. Trần Thị Lan"
    assert view.placer_order_number == "O1" and view.service_code == "18.0001.0001"
    assert view.patient.name == "Nguyễn^Văn An" and view.modality == "CT"
    assert set(view.version.sections) == set(SECTIONS)
    assert setup.reports.get(ACCESSION) == view
    assert setup.reports.for_study(STUDY_UID) == view


def test_saving_a_draft_needs_the_revision_read_and_never_overwrites_a_newer_one(setup: Setup) -> None:
    first = setup.reports.create(STUDY_UID, ReportDraft(template_id="ct-so-nao-vi"), RADIOLOGIST)
    mine = setup.reports.update(ACCESSION, ReportDraft(sections={"findings": "Máu tụ dưới màng cứng bán cầu trái."}),
                                RADIOLOGIST, first.revision)  # fmt: skip
    assert mine.revision == first.revision + 1
    with pytest.raises(StaleReport, match="reload"):
        setup.reports.update(ACCESSION, ReportDraft(sections={"findings": "Bình thường."}), "bs.minh",
                             first.revision)  # fmt: skip
    stored = setup.reports.get(ACCESSION)
    assert stored.version.section("findings") == "Máu tụ dưới màng cứng bán cầu trái."
    assert stored.revision == mine.revision


def test_text_is_stored_nfc_and_other_sections_are_kept(setup: Setup) -> None:
    view = setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    decomposed = "Ke\u0302\u0301t lua\u0323\u0302n"  # "Kết luận" typed with combining marks
    view = setup.reports.update(ACCESSION, ReportDraft(sections={"conclusion": decomposed}), RADIOLOGIST,
                                view.revision)  # fmt: skip
    view = setup.reports.update(ACCESSION, ReportDraft(sections={"findings": "A\r\nB"}), RADIOLOGIST, view.revision)
    assert view.version.section("conclusion") == "Kết luận"
    assert view.version.section("findings") == "A\nB"


def test_preliminary_and_back(setup: Setup) -> None:
    view = setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    view = setup.reports.update(ACCESSION, ReportDraft(preliminary=True), RADIOLOGIST, view.revision)
    assert view.status is ReportStatus.PRELIMINARY
    view = setup.reports.update(ACCESSION, ReportDraft(preliminary=False), RADIOLOGIST, view.revision)
    assert view.status is ReportStatus.DRAFT


@pytest.mark.parametrize("draft, message", [
    (ReportDraft(sections={"opinion": "x"}), "unknown section"),
    (ReportDraft(sections={"findings": "x" * 20_001}), "at most"),
    (ReportDraft(language="fr"), "vi or en"),
    (ReportDraft(template_id="no-such-template"), "no report template"),
    (ReportDraft(template_id="ct-so-nao-vi", structured={"weight": 3}), "has no field"),
    (ReportDraft(template_id="ct-so-nao-vi", structured={"midline_shift_mm": "a lot"}), "takes a number"),
    (ReportDraft(structured={"midline_shift_mm": 3}), "choose one first"),
])  # fmt: skip
def test_bad_drafts_are_refused_and_change_nothing(setup: Setup, draft: ReportDraft, message: str) -> None:
    with pytest.raises((InvalidArgument, NotFound), match=message):
        setup.reports.create(STUDY_UID, draft, RADIOLOGIST)
    assert table_rows(setup.archive, "report") == [] and table_rows(setup.archive, "report_version") == []


def test_structured_fields_of_the_template_are_kept(setup: Setup) -> None:
    view = setup.reports.create(STUDY_UID, ReportDraft(template_id="ct-so-nao-vi",
                                                       structured={"midline_shift_mm": 4.5}), RADIOLOGIST)  # fmt: skip
    assert setup.reports.get(ACCESSION).version.structured == {"midline_shift_mm": 4.5} == view.version.structured


def test_one_report_per_accession_and_none_for_a_study_without_one(setup: Setup) -> None:
    setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    with pytest.raises(ReportStateError, match="already has a report"):
        setup.reports.create(STUDY_UID, ReportDraft(), "bs.minh")
    ingest_ds(setup.archive, make_dataset(9, study=uid(1, 9), series=uid(2, 9), AccessionNumber=None))
    with pytest.raises(ReportStateError, match="no accession number"):
        setup.reports.create(uid(1, 9), ReportDraft(), RADIOLOGIST)
    with pytest.raises(NotFound):
        setup.reports.create(uid(1, 404), ReportDraft(), RADIOLOGIST)
    assert setup.reports.for_study(uid(1, 9)) is None


def test_cancel_a_draft_then_start_again_as_a_new_version(setup: Setup) -> None:
    view = setup.reports.create(STUDY_UID, ReportDraft(sections={"findings": "sai bệnh nhân"}), RADIOLOGIST)
    view = setup.reports.cancel(ACCESSION, RADIOLOGIST, "nhầm ca", view.revision)
    assert view.status is ReportStatus.CANCELLED and view.version.reason == "nhầm ca"
    with pytest.raises(ReportStateError, match="only an open version"):
        setup.reports.cancel(ACCESSION, RADIOLOGIST, "again", view.revision)
    again = setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    assert again.version.number == 2 and again.status is ReportStatus.DRAFT
    assert [v.status for v in again.versions] == [ReportStatus.CANCELLED, ReportStatus.DRAFT]
    assert again.versions[0].section("findings") == "sai bệnh nhân"  # nothing is deleted


def test_signing_needs_a_radiologist_and_an_open_version_with_a_conclusion(setup: Setup) -> None:
    from reports.errors import NotAllowedToSign

    view = setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    with pytest.raises(NotAllowedToSign):
        setup.reports.sign(ACCESSION, "ktv.hoa", "123456", view.revision)
    with pytest.raises(ReportStateError, match="not set up"):
        setup.reports.sign(ACCESSION, RADIOLOGIST, "123456", view.revision)
    setup.archive.audit.flush()
    refused = [r for r in table_rows(setup.archive, "audit_event") if r["action"] == "REPORT SIGN"]
    assert [(r["actor"], r["outcome"]) for r in refused] == [("ktv.hoa", "refused")]


def test_amend_needs_a_signed_version(setup: Setup) -> None:
    view = setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    with pytest.raises(ReportStateError, match="only a signed report"):
        setup.reports.amend(ACCESSION, RADIOLOGIST, "bổ sung", view.revision)
    with pytest.raises(InvalidArgument, match="reason"):
        setup.reports.amend(ACCESSION, RADIOLOGIST, "  ", view.revision)


def test_find_filters_and_final_only(setup: Setup) -> None:
    ordered_study(setup.archive, setup.worklist, "ACC002", 2, uid(1, 2))
    setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    setup.reports.create(uid(1, 2), ReportDraft(), RADIOLOGIST)
    assert {v.accession_number for v in setup.reports.find()} == {ACCESSION, "ACC002"}
    assert [v.accession_number for v in setup.reports.find(accession="ACC002")] == ["ACC002"]
    assert len(setup.reports.find(patient_id="PID001", modality="ct", status="draft")) == 2
    assert setup.reports.find(date_from="20261121") == []
    assert len(setup.reports.find(date_from="20261120", date_to="20261120")) == 2
    assert setup.reports.find(final_only=True) == []
    with pytest.raises(NotFound, match="no signed version"):
        setup.reports.get(ACCESSION, final_only=True)
    for bad in ({"status": "signed"}, {"date_from": "2026-11-20"}, {"limit": 0}):
        with pytest.raises(InvalidArgument):
            setup.reports.find(**bad)  # type: ignore[arg-type]


def test_versions_and_unknown_reports(setup: Setup) -> None:
    setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    assert setup.reports.get(ACCESSION, version=1).version.number == 1
    with pytest.raises(NotFound, match="no version 2"):
        setup.reports.get(ACCESSION, version=2)
    with pytest.raises(NotFound):
        setup.reports.get("NOPE")
    with pytest.raises(NotFound):
        setup.reports.pdf(ACCESSION)
