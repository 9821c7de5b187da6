"""A study with an order, users, and a Reports service over a temporary archive (real SQLite/PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass

from archive import Archive, Origin
from reports.service import Reports
from tests.archive.helpers import ingest_ds, make_dataset, uid
from tests.worklist.helpers import HIS, order
from worklist.service import Worklist

ADMIN = Origin("admin", "127.0.0.1", "CLI")
RADIOLOGIST, OTHER_RADIOLOGIST, TECHNOLOGIST = "bs.lan", "bs.minh", "ktv.hoa"
PASSWORD = "mat-khau-dai-1"
STUDY_UID = uid(1, 1)
ACCESSION = "ACC001"


@dataclass
class Setup:
    archive: Archive
    worklist: Worklist
    reports: Reports


def add_users(archive: Archive) -> None:
    accounts = archive.accounts
    accounts.add_user(RADIOLOGIST, "radiologist", PASSWORD, ADMIN, display_name="BS. Trần Thị Lan")
    accounts.set_practising_certificate(RADIOLOGIST, "003421/HCM-CCHN", ADMIN)
    accounts.add_user(OTHER_RADIOLOGIST, "radiologist", PASSWORD, ADMIN, display_name="BS. Lê Văn Minh")
    accounts.add_user(TECHNOLOGIST, "technologist", PASSWORD, ADMIN, display_name="KTV. Hoa")
    accounts.add_user("bs.ngoai", "referrer", PASSWORD, ADMIN, display_name="BS. Ngoại trú")
    archive.audit.flush()


def ordered_study(archive: Archive, worklist: Worklist, accession: str = ACCESSION, n: int = 1,
                  study: str = STUDY_UID) -> None:  # fmt: skip
    """An HIS order for a CT head, then its images arriving with the accession number."""
    worklist.create(order(f"O{n}", accession, procedure_code="CT-SONAO", study_instance_uid=study), HIS)
    ingest_ds(archive, make_dataset(n, study=study, series=uid(2, n), AccessionNumber=accession,
                                    StudyDescription="CT sọ não"))  # fmt: skip


def signing_reports(archive: Archive) -> Reports:
    """A Reports service that signs for real: PAdES with the test CA's certificates (tests/reports/ca.py)."""
    from reports.identities import SigningIdentities
    from reports.signoff import PadesSigner
    from reports.types import Hospital
    from tests.reports.ca import radiologist, second_radiologist

    identities = SigningIdentities(archive.db, archive.audit)
    identities.install(RADIOLOGIST, radiologist().pkcs12, radiologist().passphrase, ADMIN)
    identities.install(OTHER_RADIOLOGIST, second_radiologist().pkcs12, second_radiologist().passphrase, ADMIN)
    hospital = Hospital(name="Bệnh viện Đa khoa huyện Thử Nghiệm", facility_code="12345")
    return Reports(archive, signer=PadesSigner(identities, hospital))
