"""Finding patients for the order doors (FHIR Patient read and search).

Name matching is the archive's: folded (case- and diacritic-insensitive, Đ =
D) words from the name token index, so "nguyen van" finds "Nguyễn^Văn An".
Each word of the query must start a word of the name, in any order (FHIR's
``name`` search is a prefix match on any part of the name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, or_, select

from archive.attributes import TOKEN_PATIENT_NAME
from archive.db import Database
from archive.models import NameToken, Patient, PatientIdentifier
from archive.patients import PatientDemographics, find_patient, read_patient
from archive.text import name_tokens

_P = cast(Table, Patient.__table__)
_IDS = cast(Table, PatientIdentifier.__table__)
_TOKENS = cast(Table, NameToken.__table__)


@dataclass(frozen=True)
class FoundPatient:
    #: The index row's key: stable while the patient exists (a merge removes the merged-away row).
    pk: int
    demographics: PatientDemographics


def patient_by_pk(db: Database, pk: int) -> FoundPatient | None:
    with db.read() as conn:
        if conn.execute(select(_P.c.pk).where(_P.c.pk == pk)).scalar() is None:
            return None
        return FoundPatient(pk, read_patient(conn, pk))


def search_patients(db: Database, *, identifier: str = "", issuer: str | None = None, name: str = "",
                    birth_date: str = "", limit: int = 50, offset: int = 0) -> list[FoundPatient]:  # fmt: skip
    """Patients matching every given criterion, by name.

    `identifier` matches the Patient ID or any Other Patient ID (CCCD, BHYT);
    `issuer`, when not None, must be that identifier's issuer.
    """
    clauses = []
    if identifier:
        own = _P.c.patient_id == identifier
        other = _IDS.c.value == identifier
        if issuer is not None:
            own = own & (_P.c.issuer_of_patient_id == issuer)
            other = other & (_IDS.c.issuer == issuer)
        clauses.append(or_(own, _P.c.pk.in_(select(_IDS.c.patient_pk).where(other))))
    for word in name_tokens(name)[:8]:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(_P.c.pk.in_(select(_TOKENS.c.owner_pk).where(
            _TOKENS.c.kind == TOKEN_PATIENT_NAME, _TOKENS.c.token.like(f"{escaped}%", escape="\\"))))  # fmt: skip
    if birth_date:
        clauses.append(_P.c.patient_birth_date == birth_date)
    stmt = select(_P.c.pk).where(*clauses).order_by(_P.c.patient_name_key, _P.c.pk).limit(limit).offset(offset)
    with db.read() as conn:
        pks: list[int] = list(conn.execute(stmt).scalars())
        return [FoundPatient(int(pk), read_patient(conn, int(pk))) for pk in pks]


def patient_pk(db: Database, patient_id: str, issuer: str = "") -> int | None:
    """The row key of the patient with this ID and issuer (the FHIR Patient id), or None."""
    with db.read() as conn:
        found = find_patient(conn, patient_id, issuer)
    return None if found is None else found.pk
