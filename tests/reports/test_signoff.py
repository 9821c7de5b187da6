"""Signing through the service: PAdES with the radiologist's certificate, amendments, what stays immutable."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection

from archive import Archive, Origin
from archive.errors import NotFound
from reports.errors import ReportStateError, StaleReport
from reports.signing import WrongSigningPin, verify_pdf
from reports.types import ReportDraft, ReportStatus, ReportView
from tests.archive.helpers import table_rows
from tests.reports import ca
from tests.reports.ca import PASSPHRASE, other_ca, second_radiologist
from tests.reports.service_helpers import (
    ACCESSION,
    OTHER_RADIOLOGIST,
    RADIOLOGIST,
    STUDY_UID,
    Setup,
    add_users,
    ordered_study,
    signing_reports,
)
from worklist.service import Worklist

CONCLUSION = "Máu tụ dưới màng cứng cấp tính bán cầu trái, dày 8 mm; đè đẩy đường giữa 4 mm."


@pytest.fixture
def setup(archive: Archive) -> Iterator[Setup]:
    add_users(archive)
    worklist = Worklist(archive)
    ordered_study(archive, worklist)
    yield Setup(archive, worklist, signing_reports(archive))


def written(setup: Setup) -> ReportView:
    view = setup.reports.create(STUDY_UID, ReportDraft(template_id="ct-so-nao-vi"), RADIOLOGIST)
    return setup.reports.update(ACCESSION, ReportDraft(sections={"conclusion": CONCLUSION}), RADIOLOGIST,
                                view.revision)  # fmt: skip


def pdf_text(data: bytes) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=data, capture_output=True,
                          check=True).stdout.decode()  # fmt: skip


def test_signing_makes_a_final_version_with_a_valid_pades_signature(setup: Setup) -> None:
    seen: list[tuple[int, str]] = []

    def listener(conn: Connection, view: ReportView, origin: Origin) -> None:
        seen.append((view.version.number, view.status.value))

    setup.reports.final_listeners.append(listener)
    draft = written(setup)
    final = setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, draft.revision)
    assert final.status is ReportStatus.FINAL and seen == [(1, "final")]
    signature = final.version.signature
    assert signature is not None and signature.certificate_number == "003421/HCM-CCHN"
    assert signature.display_name == "BS. Trần Thị Lan" and "Tran Thi Lan" in signature.x509_subject
    pdf = setup.reports.pdf(ACCESSION)
    check = verify_pdf(pdf, [ca.test_ca().pem])
    assert check.ok and check.x509_serial == signature.x509_serial
    assert not verify_pdf(pdf, [other_ca().pem]).trusted
    assert CONCLUSION in " ".join(pdf_text(pdf).split())
    import hashlib

    assert hashlib.sha256(pdf).hexdigest() == final.version.pdf_sha256


def test_a_wrong_pin_changes_nothing_and_is_audited(setup: Setup) -> None:
    draft = written(setup)
    with pytest.raises(WrongSigningPin):
        setup.reports.sign(ACCESSION, RADIOLOGIST, "000000", draft.revision)
    after = setup.reports.get(ACCESSION)
    assert after.status is ReportStatus.DRAFT and after.revision == draft.revision
    assert [r["pdf_key"] for r in table_rows(setup.archive, "report_version")] == [""]
    setup.archive.audit.flush()
    actions = {(r["action"], r["outcome"]) for r in table_rows(setup.archive, "audit_event")}
    assert ("REPORT SIGN", "refused") in actions


def test_signing_a_version_someone_changed_meanwhile_is_refused(setup: Setup) -> None:
    draft = written(setup)
    setup.reports.update(ACCESSION, ReportDraft(sections={"recommendation": "Chuyển khoa ngoại thần kinh."}),
                         RADIOLOGIST, draft.revision)  # fmt: skip
    with pytest.raises(StaleReport):
        setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, draft.revision)
    assert setup.reports.get(ACCESSION).status is ReportStatus.DRAFT


def test_only_the_signers_own_certificate_signs(setup: Setup) -> None:
    """bs.minh's PIN does not open bs.lan's key: each signs with their own PKCS#12."""
    draft = written(setup)
    with pytest.raises(WrongSigningPin):
        setup.reports.sign(ACCESSION, RADIOLOGIST, second_radiologist().passphrase, draft.revision)
    final = setup.reports.sign(ACCESSION, OTHER_RADIOLOGIST, second_radiologist().passphrase, draft.revision)
    assert final.version.signature is not None and final.version.signature.username == OTHER_RADIOLOGIST


def test_a_report_needs_a_conclusion_to_be_signed(setup: Setup) -> None:
    view = setup.reports.create(STUDY_UID, ReportDraft(), RADIOLOGIST)
    with pytest.raises(ReportStateError, match="conclusion"):
        setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, view.revision)


def test_a_signed_version_never_changes_and_an_amendment_keeps_it(setup: Setup) -> None:
    final = setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, written(setup).revision)
    first_pdf = setup.reports.pdf(ACCESSION)
    for change in (lambda r: setup.reports.update(ACCESSION, ReportDraft(sections={"conclusion": "x"}),
                                                  RADIOLOGIST, r),  # fmt: skip
                   lambda r: setup.reports.cancel(ACCESSION, RADIOLOGIST, "x", r)):
        with pytest.raises(ReportStateError, match="signed"):
            change(final.revision)
    opened = setup.reports.amend(ACCESSION, RADIOLOGIST, "Bổ sung đo kích thước", final.revision)
    assert opened.version.number == 2 and opened.status is ReportStatus.DRAFT
    assert opened.version.reason == "Bổ sung đo kích thước"
    # While the amendment is open, the EMR and referrers still get version 1.
    shown = setup.reports.get(ACCESSION, final_only=True)
    assert shown.version.number == 1 and shown.status is ReportStatus.FINAL
    edited = setup.reports.update(ACCESSION, ReportDraft(sections={"conclusion": CONCLUSION + " Thể tích 35 ml."}),
                                  RADIOLOGIST, opened.revision)  # fmt: skip
    amended = setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, edited.revision)
    assert amended.status is ReportStatus.AMENDED and [v.status for v in amended.versions] == [
        ReportStatus.FINAL, ReportStatus.AMENDED]
    old = setup.reports.get(ACCESSION, version=1)
    assert old.version.section("conclusion") == CONCLUSION and old.version.status is ReportStatus.FINAL
    assert setup.reports.pdf(ACCESSION, 1) == first_pdf
    new_pdf = setup.reports.pdf(ACCESSION)
    assert new_pdf != first_pdf and verify_pdf(new_pdf, [ca.test_ca().pem]).ok
    assert "Thể tích 35 ml" in " ".join(pdf_text(new_pdf).split())


def test_dropping_an_amendment_leaves_the_signed_version_in_force(setup: Setup) -> None:
    final = setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, written(setup).revision)
    opened = setup.reports.amend(ACCESSION, RADIOLOGIST, "nhầm", final.revision)
    back = setup.reports.cancel(ACCESSION, RADIOLOGIST, "không cần sửa", opened.revision)
    assert back.status is ReportStatus.FINAL and back.version.number == 1
    assert [v.status for v in back.versions] == [ReportStatus.FINAL, ReportStatus.CANCELLED]


def test_a_failing_listener_undoes_the_signature_and_its_pdf(setup: Setup) -> None:
    def broken(conn: Connection, view: ReportView, origin: Origin) -> Any:
        raise RuntimeError("outbox full")

    setup.reports.final_listeners.append(broken)
    draft = written(setup)
    with pytest.raises(RuntimeError):
        setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, draft.revision)
    assert setup.reports.get(ACCESSION).status is ReportStatus.DRAFT
    with pytest.raises(NotFound):
        setup.reports.pdf(ACCESSION)
    objects = [p for p in (setup.archive.objects.root / "reports").rglob("*") if p.is_file()]  # type: ignore[attr-defined]
    assert objects == []


def test_five_wrong_pins_lock_signing_for_a_while(setup: Setup) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from archive.models import AuditEvent
    from reports.errors import SigningLocked

    draft = written(setup)
    for _ in range(5):
        with pytest.raises(WrongSigningPin):
            setup.reports.sign(ACCESSION, RADIOLOGIST, "000000", draft.revision)
    with pytest.raises(SigningLocked, match="locked") as locked:
        setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, draft.revision)  # even the right PIN waits
    assert 800 < locked.value.retry_after <= 901
    # Another radiologist is not locked out.
    setup.reports.sign(ACCESSION, OTHER_RADIOLOGIST, second_radiologist().passphrase, draft.revision)
    # Fifteen minutes later the lock is gone (moved back in time here).
    with setup.archive.db.write() as conn:
        conn.execute(update(AuditEvent.__table__).values(at=datetime.now(UTC) - timedelta(minutes=16)))  # type: ignore[arg-type]
    opened = setup.reports.amend(ACCESSION, OTHER_RADIOLOGIST, "bổ sung", setup.reports.get(ACCESSION).revision)
    assert setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, opened.revision).status is ReportStatus.AMENDED


def test_fsck_checks_the_signed_pdfs_too(setup: Setup) -> None:
    from archive.integrity import fsck
    from reports.stored_objects import pdf_references

    draft = written(setup)
    final = setup.reports.sign(ACCESSION, RADIOLOGIST, PASSPHRASE, draft.revision)
    archive = setup.archive
    with archive.db.read() as conn:
        [pdf] = list(pdf_references(conn))
    assert pdf.sha256 == final.version.pdf_sha256 and pdf.what == f"report PDF {ACCESSION} v1"
    assert fsck(archive.db, archive.objects, archive.audit, sources=[pdf_references]).clean
    without = fsck(archive.db, archive.objects, archive.audit)  # not told about report PDFs: they look orphaned
    assert [(f.kind, f.key) for f in without.findings] == [("orphan", pdf.key)]
    archive.objects.delete(pdf.key)
    gone = fsck(archive.db, archive.objects, archive.audit, sources=[pdf_references])
    assert [(f.kind, f.what) for f in gone.findings] == [("missing", f"report PDF {ACCESSION} v1")]
