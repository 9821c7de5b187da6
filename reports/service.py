"""The report service: drafts, sign-off, amendments; one report per accession number.

Every door (the HTTP API, the CLI) calls these methods. Each change is one
write transaction guarded by the report's revision (optimistic locking: a
caller passes the revision it read, and a change made meanwhile by someone
else is refused, never overwritten). Open versions (draft, preliminary) are
edited in place; a signed version is never written again: a correction is a
new version (an amendment) with its reason.

Signing renders the PDF, signs it (PAdES, the radiologist's own certificate
unlocked by their PIN) and stores it before the transaction that makes the
version final; the outputs that leave the box (HL7 ORU to the EMR, the DICOM
SR and PDF into the study) are queued in that same transaction through
`final_listeners`, so they exist exactly when the report is final and a
failed push never undoes a signature.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Table, func, insert, select, update

from archive import Archive, Origin
from archive.audit import audit_row
from archive.errors import InvalidArgument, NotFound
from archive.matching import is_date
from archive.models import AuditEvent, Instance, Patient, Series, Study
from archive.patients import read_patient
from archive.text import nfc
from reports.errors import NotAllowedToSign, ReportStateError, SigningLocked, StaleReport
from reports.models import Report, ReportVersionRow
from reports.templates import Templates
from reports.types import (
    SECTIONS,
    Performed,
    ReportDraft,
    ReportStatus,
    ReportVersion,
    ReportView,
    Signature,
)
from worklist.models import PerformedStep, ProcedureStep

log = logging.getLogger(__name__)

REPORT = cast(Table, Report.__table__)
VERSION = cast(Table, ReportVersionRow.__table__)
_S = cast(Table, Study.__table__)
_P = cast(Table, Patient.__table__)
_STEP = cast(Table, ProcedureStep.__table__)
_MPPS = cast(Table, PerformedStep.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)
_SERIES = cast(Table, Series.__table__)
_INSTANCE = cast(Table, Instance.__table__)

#: Wrong signing PINs allowed per radiologist within PIN_WINDOW before signing waits.
MAX_WRONG_PINS = 5
PIN_WINDOW = timedelta(minutes=15)
_WRONG_PIN = "wrong signing PIN"

#: Longest text a section takes (a long CT report is ~5,000 characters).
MAX_SECTION_CHARS = 20_000
MAX_REASON_CHARS = 1_000

#: Called inside the transaction that makes a version final or amended: the
#: ORU and DICOM outputs are queued here, committed with the signature.
FinalListener = Callable[[Connection, ReportView, Origin], None]


@dataclass(frozen=True)
class SignedDocument:
    """The signed PDF of a version and the certificate that signed it."""

    pdf: bytes
    x509_serial: str
    x509_subject: str


class DocumentSigner(Protocol):
    """Renders a version as PDF and signs it with the signer's own key (reports.signoff)."""

    def sign(self, view: ReportView, username: str, pin: str, share_url: Callable[[], str]) -> SignedDocument:
        """`share_url` is called only once the PIN opened the key (a refused signature makes no link)."""
        ...


#: The patient's link for the QR code on the PDF ("" for none): (connection, the report, actor).
ShareUrl = Callable[[ReportView, str], str]


class Reports:
    """Reports over the archive's index, with the worklist's orders for their context."""

    def __init__(self, archive: Archive, templates: Templates | None = None,
                 signer: DocumentSigner | None = None, share_url: ShareUrl | None = None) -> None:  # fmt: skip
        self.archive = archive
        self.db = archive.db
        self.templates = templates or Templates.load()
        self.signer = signer
        self.share_url = share_url
        self.final_listeners: list[FinalListener] = []

    # --- reading ---------------------------------------------------------------

    def get(self, accession: str, version: int | None = None, final_only: bool = False) -> ReportView:
        """The report of an accession number, showing its current version (or `version`).

        `final_only` shows the newest signed version and hides a report that has
        none (a referrer's view, and the EMR's).
        """
        with self.db.read() as conn:
            pk = conn.execute(select(REPORT.c.pk).where(REPORT.c.accession_number == accession)).scalar()
            if pk is None:
                raise NotFound(f"no report for accession number {accession!r}")
            return _shown(report_view(conn, pk), version, final_only, accession)

    def get_by_id(self, report_id: int, final_only: bool = False) -> ReportView:
        with self.db.read() as conn:
            if conn.execute(select(REPORT.c.pk).where(REPORT.c.pk == report_id)).scalar() is None:
                raise NotFound(f"no report {report_id}")
            return _shown(report_view(conn, report_id), None, final_only, str(report_id))

    def for_study(self, study_instance_uid: str, final_only: bool = False) -> ReportView | None:
        """The report of a study, or None (also None when `final_only` and nothing is signed yet)."""
        with self.db.read() as conn:
            pk = conn.execute(select(REPORT.c.pk).join(_S, _S.c.pk == REPORT.c.study_pk)
                              .where(_S.c.study_instance_uid == study_instance_uid)).scalar()  # fmt: skip
            if pk is None:
                return None
            view = report_view(conn, pk)
        signed = latest_signed(view)
        return signed if final_only else view

    def find(self, *, accession: str = "", patient_id: str = "", status: str = "", modality: str = "",
             date_from: str = "", date_to: str = "", final_only: bool = False, limit: int = 100,
             offset: int = 0) -> list[ReportView]:  # fmt: skip
        """Reports, newest change first. Dates (YYYYMMDD) bound the study date; status is the current one."""
        stmt = select(REPORT.c.pk).join(_S, _S.c.pk == REPORT.c.study_pk)
        if accession:
            stmt = stmt.where(REPORT.c.accession_number == accession)
        if patient_id:
            stmt = stmt.join(_P, _P.c.pk == REPORT.c.patient_pk).where(_P.c.patient_id == patient_id)
        if status:
            if status not in {s.value for s in ReportStatus}:
                raise InvalidArgument(f"status {status!r} is not one of {', '.join(s.value for s in ReportStatus)}")
            stmt = stmt.where(REPORT.c.status == status)
        if modality:
            stmt = stmt.where(REPORT.c.modality == modality.upper())
        for value, op in ((date_from, "ge"), (date_to, "le")):
            if value:
                if not is_date(value):
                    raise InvalidArgument(f"date {value!r} is not YYYYMMDD")
                stmt = stmt.where(_S.c.study_date >= value if op == "ge" else _S.c.study_date <= value)
        if final_only:
            stmt = stmt.where(REPORT.c.finalised_at.is_not(None))
        if not (1 <= limit <= 1000) or offset < 0:
            raise InvalidArgument("limit must be 1-1000 and offset 0 or more")
        stmt = stmt.order_by(REPORT.c.updated_at.desc(), REPORT.c.pk.desc()).limit(limit).offset(offset)
        with self.db.read() as conn:
            pks: list[int] = list(conn.execute(stmt).scalars())
            views = [report_view(conn, pk) for pk in pks]
        if final_only:
            return [v for v in (latest_signed(v) for v in views) if v is not None]
        return views

    def pdf(self, accession: str, version: int | None = None) -> bytes:
        """The signed PDF of a signed version (the newest signed one by default)."""
        with self.db.read() as conn:
            pk = conn.execute(select(REPORT.c.pk).where(REPORT.c.accession_number == accession)).scalar()
            if pk is None:
                raise NotFound(f"no report for accession number {accession!r}")
            stmt = select(VERSION.c.number, VERSION.c.pdf_key).where(VERSION.c.report_pk == pk,
                                                                      VERSION.c.pdf_key != "")  # fmt: skip
            if version is not None:
                stmt = stmt.where(VERSION.c.number == version)
            row = conn.execute(stmt.order_by(VERSION.c.number.desc())).first()
        if row is None:
            raise NotFound(f"report {accession} has no signed PDF" + (f" for version {version}" if version else ""))
        with self.archive.objects.open(row.pdf_key) as f:
            return f.read()

    # --- writing ---------------------------------------------------------------

    def create(self, study_instance_uid: str, draft: ReportDraft, actor: str,
               origin: Origin | None = None) -> ReportView:  # fmt: skip
        """Start the report of a study (a new draft; after a cancelled one, a new version)."""
        origin = origin or Origin(actor, via="HTTP")
        fields = self._draft_fields(draft, None)
        now = datetime.now(UTC)
        with self.db.write() as conn:
            study = conn.execute(select(_S).where(_S.c.study_instance_uid == study_instance_uid)).first()
            if study is None:
                raise NotFound(f"no study {study_instance_uid}")
            accession = study.accession_number.strip()
            if not accession:
                raise ReportStateError("the study has no accession number: match it to an order first "
                                       "(technologist: unmatched studies), then write its report")  # fmt: skip
            existing = conn.execute(select(REPORT).where(REPORT.c.accession_number == accession)).first()
            if existing is not None and existing.status != ReportStatus.CANCELLED.value:
                raise ReportStateError(f"accession {accession} already has a report ({existing.status}); "
                                       "open it instead")  # fmt: skip
            if existing is not None and existing.study_pk != study.pk:
                raise ReportStateError(f"accession {accession} belongs to another study's report")
            step_pk = conn.execute(select(_STEP.c.pk).where(_STEP.c.accession_number == accession)).scalar()
            modality = _modality(study.modalities_in_study)
            if existing is None:
                pk: int = conn.execute(insert(REPORT).returning(REPORT.c.pk), {
                    "accession_number": accession, "study_pk": study.pk, "step_pk": step_pk,
                    "patient_pk": study.patient_pk, "status": ReportStatus.DRAFT.value, "current_version": 1,
                    "revision": 1, "modality": modality, "created_at": now, "updated_at": now,
                    "finalised_at": None}).scalar_one()  # fmt: skip
                number = 1
            else:
                pk, number = existing.pk, existing.current_version + 1
                conn.execute(update(REPORT).where(REPORT.c.pk == pk).values(
                    status=ReportStatus.DRAFT.value, current_version=number, revision=existing.revision + 1,
                    updated_at=now))  # fmt: skip
            conn.execute(insert(VERSION), _new_version(pk, number, fields, actor, self._name(actor), now))
            _audit(conn, origin, "REPORT CREATE", accession, "draft")
            view = report_view(conn, pk)
        log.info("report %s: draft started by %s", accession, actor)
        return view

    def update(self, accession: str, draft: ReportDraft, actor: str, revision: int,
               origin: Origin | None = None) -> ReportView:  # fmt: skip
        """Change the open version's text (autosave); refused once signed or when someone else changed it."""
        origin = origin or Origin(actor, via="HTTP")
        now = datetime.now(UTC)
        with self.db.write() as conn:
            row = self._locked(conn, accession, revision)
            current = self._current(conn, row)
            if not ReportStatus(current.status).is_open:
                raise ReportStateError(f"report {accession} version {current.number} is {current.status}; "
                                       "a signed version never changes: amend it instead")  # fmt: skip
            fields = self._draft_fields(draft, current)
            conn.execute(update(VERSION).where(VERSION.c.pk == current.pk).values(
                **fields, updated_at=now))  # fmt: skip
            self._bump(conn, row, fields["status"], now)
            _audit(conn, origin, "REPORT UPDATE", accession, fields["status"])
            view = report_view(conn, row.pk)
        log.info("report %s: version %d saved by %s", accession, current.number, actor)
        return view

    def sign(self, accession: str, actor: str, pin: str, revision: int, origin: Origin | None = None) -> ReportView:
        """Make the open version final (or amended): PDF rendered, PAdES-signed with the actor's key, stored.

        Only a radiologist signs, and only with their own certificate, unlocked by
        the PIN (the PKCS#12 passphrase; never stored). A wrong PIN changes nothing.
        """
        origin = origin or Origin(actor, via="HTTP")
        user = self._user(actor)
        if user is None or user.role != "radiologist" or user.disabled:
            self._refused(origin, accession, "not a radiologist")
            raise NotAllowedToSign(f"{actor} may not sign reports: only a radiologist signs, with their own "
                                   "signing certificate")  # fmt: skip
        if self.signer is None:
            raise ReportStateError("signing is not set up on this server (reports.signoff)")
        view = self.get(accession)
        if view.revision != revision:
            raise _stale(accession, revision, view.revision)
        if not view.version.status.is_open:
            raise ReportStateError(f"report {accession} is {view.status.value}: there is no open version to sign")
        if not view.version.section("conclusion").strip():
            raise ReportStateError("a report is signed with a conclusion (kết luận): write one first")
        now = datetime.now(UTC)
        signed_before = any(v.status.is_signed for v in view.versions)
        status = ReportStatus.AMENDED if signed_before else ReportStatus.FINAL
        signature = Signature(actor, user.display_name, user.practising_certificate, now.isoformat())
        final = _with_version(view, replace(view.version, status=status, signature=signature))
        self._check_pin_lock(actor, now)
        make_link = self.share_url

        def share_url() -> str:
            return make_link(final, actor) if make_link else ""

        try:
            document = self.signer.sign(final, actor, pin, share_url)
        except Exception as exc:
            wrong_pin = type(exc).__name__ == "WrongSigningPin"
            self._refused(origin, accession, _WRONG_PIN if wrong_pin else getattr(exc, "message", type(exc).__name__))
            raise
        final = _with_version(final, replace(final.version, signature=replace(
            signature, x509_serial=document.x509_serial, x509_subject=document.x509_subject)))  # fmt: skip
        stored = self.archive.objects.put(f"reports/{view.id}/v{view.version.number}-{secrets.token_hex(8)}.pdf",
                                          io.BytesIO(document.pdf))  # fmt: skip
        try:
            with self.db.write() as conn:
                row = self._locked(conn, accession, revision)
                current = self._current(conn, row)
                conn.execute(update(VERSION).where(VERSION.c.pk == current.pk).values(
                    status=status.value, signer=actor, signer_name=user.display_name,
                    signer_certificate_number=user.practising_certificate, signed_at=now,
                    x509_serial=document.x509_serial, x509_subject=document.x509_subject,
                    pdf_key=stored.key, pdf_sha256=stored.sha256, updated_at=now))  # fmt: skip
                self._bump(conn, row, status.value, now, finalised=row.finalised_at or now)
                _audit(conn, origin, "REPORT SIGN", accession, status.value,
                       f"version {current.number}; certificate serial {document.x509_serial}")  # fmt: skip
                final = report_view(conn, row.pk)
                for listener in self.final_listeners:
                    listener(conn, final, origin)
        except BaseException:
            self.archive.objects.delete(stored.key)
            raise
        log.info("report %s: version %d signed by %s (%s), PDF %s", accession, final.version.number, actor,
                 status.value, stored.sha256[:12])  # fmt: skip
        return final

    def amend(self, accession: str, actor: str, reason: str, revision: int,
              origin: Origin | None = None) -> ReportView:  # fmt: skip
        """Open a new version of a signed report, starting from its text; the signed one stays as it is."""
        origin = origin or Origin(actor, via="HTTP")
        reason = nfc(reason.strip())
        if not reason or len(reason) > MAX_REASON_CHARS:
            raise InvalidArgument(f"an amendment needs a reason (1-{MAX_REASON_CHARS} characters)")
        now = datetime.now(UTC)
        with self.db.write() as conn:
            row = self._locked(conn, accession, revision)
            current = self._current(conn, row)
            if not ReportStatus(current.status).is_signed:
                raise ReportStateError(f"report {accession} is {current.status}: only a signed report is "
                                       "amended (edit the open version instead)")  # fmt: skip
            fields = {"status": ReportStatus.DRAFT.value, "language": current.language,
                      "template_id": current.template_id, "sections": dict(current.sections),
                      "structured": dict(current.structured)}  # fmt: skip
            values = _new_version(row.pk, current.number + 1, fields, actor, self._name(actor), now)
            conn.execute(insert(VERSION), {**values, "reason": reason})
            conn.execute(update(REPORT).where(REPORT.c.pk == row.pk).values(current_version=current.number + 1))
            self._bump(conn, row, ReportStatus.DRAFT.value, now)
            _audit(conn, origin, "REPORT AMEND", accession, "draft", f"version {current.number + 1}: {reason}")
            view = report_view(conn, row.pk)
        log.info("report %s: amendment (version %d) opened by %s", accession, view.version.number, actor)
        return view

    def cancel(self, accession: str, actor: str, reason: str, revision: int,
               origin: Origin | None = None) -> ReportView:  # fmt: skip
        """Withdraw the open version. A never-signed report becomes cancelled; a dropped amendment
        leaves the signed version in force. A signed version itself is never cancelled."""
        origin = origin or Origin(actor, via="HTTP")
        reason = nfc(reason.strip())[:MAX_REASON_CHARS]
        now = datetime.now(UTC)
        with self.db.write() as conn:
            row = self._locked(conn, accession, revision)
            current = self._current(conn, row)
            if not ReportStatus(current.status).is_open:
                raise ReportStateError(f"report {accession} version {current.number} is {current.status}: "
                                       "only an open version is cancelled (a signed one is amended)")  # fmt: skip
            conn.execute(update(VERSION).where(VERSION.c.pk == current.pk).values(
                status=ReportStatus.CANCELLED.value, reason=reason, updated_at=now))  # fmt: skip
            previous = conn.execute(select(VERSION.c.status).where(
                VERSION.c.report_pk == row.pk, VERSION.c.number < current.number,
                VERSION.c.status.in_([ReportStatus.FINAL.value, ReportStatus.AMENDED.value]))
                .order_by(VERSION.c.number.desc())).scalar()  # fmt: skip
            status = previous or ReportStatus.CANCELLED.value
            if previous:  # the signed version is current again
                number: int = conn.execute(select(func.max(VERSION.c.number)).where(
                    VERSION.c.report_pk == row.pk, VERSION.c.status == previous)).scalar_one()  # fmt: skip
                conn.execute(update(REPORT).where(REPORT.c.pk == row.pk).values(current_version=number))
            self._bump(conn, row, status, now)
            _audit(conn, origin, "REPORT CANCEL", accession, status, f"version {current.number}: {reason}")
            view = report_view(conn, row.pk)
        log.info("report %s: version %d cancelled by %s", accession, current.number, actor)
        return view

    # --- helpers ---------------------------------------------------------------

    def _draft_fields(self, draft: ReportDraft, current: Any) -> dict[str, Any]:
        """The columns a draft sets, checked; unset parts keep the current version's (or the template's)."""
        template = self.templates.get(draft.template_id) if draft.template_id else None
        language = draft.language or (template.language if template else None) or (
            current.language if current is not None else "vi")  # fmt: skip
        if language not in ("vi", "en"):
            raise InvalidArgument("language must be vi or en")
        if current is not None:
            sections = dict(current.sections)
        else:
            sections = dict(template.sections) if template else {}
        for name, text in (draft.sections or {}).items():
            if name not in SECTIONS:
                raise InvalidArgument(f"unknown section {name!r} (sections: {', '.join(SECTIONS)})")
            if not isinstance(text, str) or len(text) > MAX_SECTION_CHARS:
                raise InvalidArgument(f"section {name} must be text of at most {MAX_SECTION_CHARS} characters")
            sections[name] = nfc(text.replace("\r\n", "\n"))
        structured = dict(current.structured) if current is not None else {}
        if draft.structured is not None:
            structured = dict(draft.structured)
        template_id = draft.template_id or (current.template_id if current is not None else "")
        if structured:
            if not template_id:
                raise InvalidArgument("structured fields come from a template: choose one first")
            self.templates.get(template_id).check_structured(structured)
        status = ReportStatus.DRAFT.value if current is None else current.status
        if draft.preliminary is not None:
            status = (ReportStatus.PRELIMINARY if draft.preliminary else ReportStatus.DRAFT).value
        return {"status": status, "language": language, "template_id": template_id,
                "sections": {k: sections.get(k, "") for k in SECTIONS}, "structured": structured}  # fmt: skip

    def _locked(self, conn: Connection, accession: str, revision: int) -> Any:
        row = conn.execute(select(REPORT).where(REPORT.c.accession_number == accession)).first()
        if row is None:
            raise NotFound(f"no report for accession number {accession!r}")
        if row.revision != revision:
            raise _stale(accession, revision, row.revision)
        return row

    def _current(self, conn: Connection, row: Any) -> Any:
        return conn.execute(select(VERSION).where(VERSION.c.report_pk == row.pk,
                                                  VERSION.c.number == row.current_version)).one()  # fmt: skip

    def _bump(self, conn: Connection, row: Any, status: str, now: datetime, finalised: datetime | None = None) -> None:
        """Move the revision on, only if nobody else did since `row` was read (the lock itself)."""
        values: dict[str, Any] = {"status": status, "revision": row.revision + 1, "updated_at": now}
        if finalised is not None:
            values["finalised_at"] = finalised
        done = conn.execute(update(REPORT).where(REPORT.c.pk == row.pk, REPORT.c.revision == row.revision)
                            .values(**values)).rowcount  # fmt: skip
        if done != 1:
            raise _stale(row.accession_number, row.revision, None)

    def _user(self, username: str) -> Any:
        return self.archive.accounts.user(username)

    def _name(self, username: str) -> str:
        user = self._user(username)
        return str(user.display_name) if user is not None else username

    def _check_pin_lock(self, actor: str, now: datetime) -> None:
        """SigningLocked after MAX_WRONG_PINS wrong PINs within PIN_WINDOW (counted in the audit log: every node sees it)."""
        since = now - PIN_WINDOW
        with self.db.read() as conn:
            times: list[datetime] = list(conn.execute(select(_AUDIT.c.at).where(
                _AUDIT.c.action == "REPORT SIGN", _AUDIT.c.actor == actor, _AUDIT.c.outcome == "refused",
                _AUDIT.c.detail == _WRONG_PIN, _AUDIT.c.at >= since).order_by(_AUDIT.c.at.desc())
                .limit(MAX_WRONG_PINS)).scalars())  # fmt: skip
        if len(times) >= MAX_WRONG_PINS:
            oldest = times[-1] if times[-1].tzinfo else times[-1].replace(tzinfo=UTC)
            wait = max(1, int((oldest + PIN_WINDOW - now).total_seconds()) + 1)
            raise SigningLocked(f"{MAX_WRONG_PINS} wrong signing PINs in a row: signing is locked for "
                                f"{(wait + 59) // 60} minute(s); if you forgot the PIN, ask an administrator to "
                                "install your certificate again", wait)  # fmt: skip

    def _refused(self, origin: Origin, accession: str, why: str) -> None:
        with self.db.write() as conn:
            _audit(conn, origin, "REPORT SIGN", accession, "refused", why)


# --- views -----------------------------------------------------------------------


def report_view(conn: Connection, pk: int) -> ReportView:
    """The report `pk` with its study, patient, order and every version."""
    row = conn.execute(select(REPORT).where(REPORT.c.pk == pk)).one()
    study = conn.execute(select(_S).where(_S.c.pk == row.study_pk)).one()
    step = conn.execute(select(_STEP).where(_STEP.c.pk == row.step_pk)).first() if row.step_pk else None
    versions = tuple(_version(v) for v in conn.execute(
        select(VERSION).where(VERSION.c.report_pk == pk).order_by(VERSION.c.number)))  # fmt: skip
    current = next(v for v in versions if v.number == row.current_version)
    return ReportView(
        id=row.pk, accession_number=row.accession_number, status=ReportStatus(row.status), revision=row.revision,
        patient=read_patient(conn, row.patient_pk), study_instance_uid=study.study_instance_uid,
        study_date=study.study_date, study_time=study.study_time[:6],
        study_description=study.study_description or (step.requested_procedure_description if step else ""),
        modality=row.modality,
        placer_issuer=step.placer_issuer if step else "", placer_order_number=step.placer_order_number if step else "",
        filler_order_number=step.filler_order_number if step else "",
        procedure_code=step.procedure_code if step else "", procedure_scheme=step.procedure_scheme if step else "",
        procedure_description=step.requested_procedure_description if step else study.study_description,
        service_code=step.service_code if step else "", indicator_code=step.indicator_code if step else "",
        referring_physician=(step.referring_physician if step else "") or study.referring_physician_name,
        priority=step.priority if step else "",
        performed=_performed(conn, study, step), version=current, versions=versions,
        created_at=_iso(row.created_at), updated_at=_iso(row.updated_at),
    )  # fmt: skip


def latest_signed(view: ReportView) -> ReportView | None:
    """The view at its newest signed version (status included), or None when nothing is signed."""
    signed = [v for v in view.versions if v.status.is_signed]
    if not signed:
        return None
    return replace(view, version=signed[-1], status=signed[-1].status)


def _shown(view: ReportView, version: int | None, final_only: bool, what: str) -> ReportView:
    if final_only:
        signed = latest_signed(view)
        if signed is None:
            raise NotFound(f"report {what} has no signed version yet")
        view = signed
        if version is not None and not view.at_version(version).version.status.is_signed:
            raise NotFound(f"report {what} has no signed version {version}")
    if version is not None:
        try:
            return view.at_version(version)
        except KeyError:
            raise NotFound(f"report {what} has no version {version}") from None
    return view


def _with_version(view: ReportView, version: ReportVersion) -> ReportView:
    versions = tuple(version if v.number == version.number else v for v in view.versions)
    return replace(view, version=version, versions=versions, status=version.status)


def _version(row: Any) -> ReportVersion:
    signature = None
    if row.signed_at is not None:
        signature = Signature(row.signer, row.signer_name, row.signer_certificate_number, _iso(row.signed_at),
                              row.x509_serial, row.x509_subject)  # fmt: skip
    return ReportVersion(
        number=row.number, status=ReportStatus(row.status), language=row.language, template_id=row.template_id,
        sections={k: str(row.sections.get(k, "")) for k in SECTIONS}, structured=dict(row.structured),
        author=row.author, author_name=row.author_name, created_at=_iso(row.created_at),
        updated_at=_iso(row.updated_at), signature=signature, reason=row.reason, pdf_sha256=row.pdf_sha256,
        sr_sop_instance_uid=row.sr_sop_instance_uid, pdf_sop_instance_uid=row.pdf_sop_instance_uid,
    )  # fmt: skip


def _performed(conn: Connection, study: Any, step: Any) -> Performed:
    """MPPS when the modality sent one, else the first series' (operator, performed step start), the
    study's date and time, and the AE title that sent the first image."""
    at, performer, station = "", "", ""
    if step is not None:
        mpps = conn.execute(select(_MPPS).where(_MPPS.c.step_pk == step.pk)
                            .order_by(_MPPS.c.updated_at.desc())).first()  # fmt: skip
        if mpps is not None:
            attrs = mpps.attrs or {}
            at = _json_value(attrs, "00400244") + _json_value(attrs, "00400245")[:6]
            performer = _json_value(attrs, "00081070") or _json_value(attrs, "00081050")
            station = mpps.calling_ae
    first_series = conn.execute(select(_SERIES.c.attrs).where(_SERIES.c.study_pk == study.pk)
                                .order_by(_SERIES.c.pk).limit(1)).scalar() or {}  # fmt: skip
    if not at and _json_value(first_series, "00400244"):
        at = _json_value(first_series, "00400244") + _json_value(first_series, "00400245")[:6]
    if not at and study.study_date:
        at = study.study_date + (study.study_time or "")[:6]
    if not performer:
        performer = _json_value(first_series, "00081070") or _json_value(first_series, "00081050")
    if not station:
        station = conn.execute(select(_INSTANCE.c.calling_ae).join(_SERIES, _SERIES.c.pk == _INSTANCE.c.series_pk)
                               .where(_SERIES.c.study_pk == study.pk).order_by(_INSTANCE.c.pk).limit(1)
                               ).scalar() or ""  # fmt: skip
    return Performed(at=at, performer=performer, station_ae_title=station)


def _json_value(attrs: dict[str, Any], tag: str) -> str:
    """The first value of a DICOM JSON attribute as text (a PN as its Alphabetic form)."""
    values = (attrs.get(tag) or {}).get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict):
        return str(first.get("Alphabetic", ""))
    return str(first)


def _modality(modalities_in_study: str) -> str:
    """The imaging modality of a study (SR/KO/PR/DOC objects do not count)."""
    parts = [m for m in (modalities_in_study or "").split("\\") if m]
    imaging = [m for m in parts if m not in ("SR", "KO", "PR", "DOC", "OT")]
    return (imaging or parts or [""])[0]


def _new_version(report_pk: int, number: int, fields: dict[str, Any], actor: str, name: str,
                 now: datetime) -> dict[str, Any]:  # fmt: skip
    return {
        "report_pk": report_pk, "number": number, **fields, "author": actor, "author_name": name,
        "created_at": now, "updated_at": now, "signer": "", "signer_name": "", "signer_certificate_number": "",
        "signed_at": None, "x509_serial": "", "x509_subject": "", "reason": "", "pdf_key": "", "pdf_sha256": "",
        "sr_sop_instance_uid": "", "pdf_sop_instance_uid": "",
    }  # fmt: skip


def _stale(accession: str, expected: int, actual: int | None) -> StaleReport:
    now = f" (it is at revision {actual})" if actual is not None else ""
    return StaleReport(f"report {accession} was changed by someone else since revision {expected}{now}: "
                       "reload it, then make your change again")  # fmt: skip


def _audit(conn: Connection, origin: Origin, action: str, accession: str, outcome: str, detail: str = "") -> None:
    conn.execute(insert(_AUDIT), audit_row(origin, action, "REPORT", accession, outcome, detail))


def _iso(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


__all__ = ["DocumentSigner", "FinalListener", "Reports", "SignedDocument", "latest_signed", "report_view"]
