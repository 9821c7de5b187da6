"""Patients as the HIS knows them: created, corrected and merged by orders and ADT messages.

The archive files images under the Patient ID the modality sends. When the
HIS is connected it is the master of demographics: an order creates (or
corrects) the patient row its images will be filed under, ADT^A08 corrects it
and ADT^A40 merges two rows into one. Changes keep the index's derived data
(folded name key, name words, Other Patient IDs, the level's DICOM JSON) in
step, so every edge answers with the corrected values at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import Connection, Table, delete, insert, select, update

from archive.attributes import TOKEN_PATIENT_NAME
from archive.models import NameToken, Patient, PatientIdentifier, Study
from archive.text import name_key, name_tokens, nfc

_P = cast(Table, Patient.__table__)
_IDS = cast(Table, PatientIdentifier.__table__)
_TOKENS = cast(Table, NameToken.__table__)
_STUDY = cast(Table, Study.__table__)


@dataclass(frozen=True)
class OtherId:
    """An Other Patient ID: the citizen ID (CCCD), the health-insurance card (BHYT), ..."""

    value: str
    #: Issuer of Patient ID, e.g. "CCCD", "BHYT".
    issuer: str = ""
    #: Type of Patient ID (0010,0022): TEXT, RFID, BARCODE.
    type_of_id: str = "TEXT"


@dataclass(frozen=True)
class PatientDemographics:
    """The patient as the HIS knows them."""

    patient_id: str
    issuer: str = ""
    #: DICOM PN form, NFC: "Nguyễn^Văn An".
    name: str = ""
    #: YYYYMMDD or "".
    birth_date: str = ""
    #: M, F, O or "".
    sex: str = ""
    other_ids: tuple[OtherId, ...] = ()

    def normalised(self) -> PatientDemographics:
        return replace(self, patient_id=self.patient_id.strip(), issuer=self.issuer.strip(),
                       name=nfc(self.name.strip()), sex=self.sex.strip().upper())  # fmt: skip


@dataclass(frozen=True)
class PatientRow:
    pk: int
    demographics: PatientDemographics


def patient_key(patient_id: str, issuer: str = "") -> str:
    """The index's identity of a patient (archive.attributes.index_record uses the same)."""
    return f"id\x1f{issuer}\x1f{patient_id}"


def find_patient(conn: Connection, patient_id: str, issuer: str = "") -> PatientRow | None:
    row = conn.execute(select(_P).where(_P.c.patient_key == patient_key(patient_id, issuer))).first()
    return None if row is None else PatientRow(int(row.pk), _demographics(conn, row))


def read_patient(conn: Connection, pk: int) -> PatientDemographics:
    row = conn.execute(select(_P).where(_P.c.pk == pk)).one()
    return _demographics(conn, row)


def _demographics(conn: Connection, row: Any) -> PatientDemographics:
    ids = conn.execute(
        select(_IDS.c.value, _IDS.c.issuer, _IDS.c.type_of_id).where(_IDS.c.patient_pk == row.pk)
        .order_by(_IDS.c.pk)
    ).all()  # fmt: skip
    return PatientDemographics(
        patient_id=row.patient_id, issuer=row.issuer_of_patient_id, name=row.patient_name,
        birth_date=row.patient_birth_date, sex=row.patient_sex,
        other_ids=tuple(OtherId(str(v), str(i), str(t)) for v, i, t in ids),
    )  # fmt: skip


def changes(old: PatientDemographics, new: PatientDemographics) -> list[str]:
    """What `new` changes of `old`, as short lines for the audit log (no value is blanked by omission)."""
    out = []
    for field_ in ("name", "birth_date", "sex"):
        before, after = getattr(old, field_), getattr(new, field_)
        if after and after != before:
            out.append(f"{field_}: {before!r} -> {after!r}")
    known = {o.value for o in old.other_ids}
    added = [o.value for o in new.other_ids if o.value not in known]
    if added:
        out.append(f"other ids added: {', '.join(added)}")
    return out


def upsert_patient(conn: Connection, demo: PatientDemographics, now: datetime) -> tuple[int, list[str]]:
    """The patient's pk, creating the row or correcting it from `demo`; returns what changed.

    Empty fields of `demo` leave the stored value alone: an order that omits
    the birth date must not erase it.
    """
    demo = demo.normalised()
    existing = find_patient(conn, demo.patient_id, demo.issuer)
    if existing is None:
        pk: int = conn.execute(insert(_P).returning(_P.c.pk), {
            "patient_key": patient_key(demo.patient_id, demo.issuer),
            "patient_id": demo.patient_id,
            "issuer_of_patient_id": demo.issuer,
            "patient_name": demo.name,
            "patient_name_key": name_key(demo.name),
            "patient_birth_date": demo.birth_date,
            "patient_sex": demo.sex,
            "attrs": patient_attrs(demo),
            "created_at": now,
            "updated_at": now,
        }).scalar_one()  # fmt: skip
        _set_tokens(conn, int(pk), demo.name)
        _add_ids(conn, int(pk), demo.other_ids, ())
        return int(pk), ["created"]
    changed = changes(existing.demographics, demo)
    if changed:
        _rewrite(conn, existing.pk, existing.demographics, demo, now)
    return existing.pk, changed


def _rewrite(conn: Connection, pk: int, old: PatientDemographics, new: PatientDemographics,
             now: datetime) -> None:  # fmt: skip
    merged = PatientDemographics(
        patient_id=old.patient_id, issuer=old.issuer,
        name=new.name or old.name, birth_date=new.birth_date or old.birth_date,
        sex=new.sex or old.sex,
        other_ids=old.other_ids + tuple(o for o in new.other_ids
                                        if o.value not in {x.value for x in old.other_ids}),
    )  # fmt: skip
    row: dict[str, Any] | None = conn.execute(select(_P.c.attrs).where(_P.c.pk == pk)).scalar_one()
    attrs = {**(row or {}), **patient_attrs(merged)}
    conn.execute(update(_P).where(_P.c.pk == pk).values(
        patient_name=merged.name, patient_name_key=name_key(merged.name),
        patient_birth_date=merged.birth_date, patient_sex=merged.sex, attrs=attrs, updated_at=now,
    ))  # fmt: skip
    if merged.name != old.name:
        _set_tokens(conn, pk, merged.name)
    _add_ids(conn, pk, merged.other_ids, old.other_ids)


def _set_tokens(conn: Connection, pk: int, name: str) -> None:
    conn.execute(delete(_TOKENS).where(_TOKENS.c.kind == TOKEN_PATIENT_NAME, _TOKENS.c.owner_pk == pk))
    tokens = sorted(set(name_tokens(name)))
    if tokens:
        conn.execute(insert(_TOKENS), [{"kind": TOKEN_PATIENT_NAME, "owner_pk": pk, "token": t} for t in tokens])


def _add_ids(conn: Connection, pk: int, ids: tuple[OtherId, ...], known: tuple[OtherId, ...]) -> None:
    seen = {o.value for o in known}
    new = [o for o in ids if o.value and o.value not in seen]
    if new:
        conn.execute(insert(_IDS), [
            {"patient_pk": pk, "value": o.value, "issuer": o.issuer, "type_of_id": o.type_of_id} for o in new
        ])  # fmt: skip


def patient_module(demo: PatientDemographics) -> Dataset:
    """The Patient module attributes of `demo` (PS3.3 C.7.1.1), Other Patient IDs included."""
    ds = Dataset()
    ds.PatientName = demo.name
    ds.PatientID = demo.patient_id
    if demo.issuer:
        ds.IssuerOfPatientID = demo.issuer
    ds.PatientBirthDate = demo.birth_date
    ds.PatientSex = demo.sex
    if demo.other_ids:
        items = []
        for other in demo.other_ids:
            item = Dataset()
            item.PatientID = other.value
            item.IssuerOfPatientID = other.issuer
            item.TypeOfPatientID = other.type_of_id or "TEXT"
            items.append(item)
        ds.OtherPatientIDsSequence = Sequence(items)
    return ds


def patient_attrs(demo: PatientDemographics) -> dict[str, Any]:
    """The patient level's DICOM JSON (what C-FIND and QIDO return) for `demo`."""
    result: dict[str, Any] = patient_module(demo).to_json_dict()
    return result


def merge_patients(conn: Connection, surviving_pk: int, prior_pk: int) -> int:
    """Move the prior patient's studies and identifiers to the surviving one and remove it.

    Returns the number of studies moved. The prior Patient ID is kept as an
    Other Patient ID of the survivor, so a search by it still finds them.
    """
    if surviving_pk == prior_pk:
        return 0
    prior = read_patient(conn, prior_pk)
    survivor = read_patient(conn, surviving_pk)
    moved = conn.execute(update(_STUDY).where(_STUDY.c.patient_pk == prior_pk)
                         .values(patient_pk=surviving_pk)).rowcount  # fmt: skip
    old_ids = (OtherId(prior.patient_id, prior.issuer, "TEXT"), *prior.other_ids)
    conn.execute(delete(_IDS).where(_IDS.c.patient_pk == prior_pk))
    _add_ids(conn, surviving_pk, old_ids, survivor.other_ids)
    merged_ids = survivor.other_ids + tuple(o for o in old_ids if o.value not in {x.value for x in survivor.other_ids})
    stored: dict[str, Any] = conn.execute(select(_P.c.attrs).where(_P.c.pk == surviving_pk)).scalar_one() or {}
    attrs = {**stored, **patient_attrs(replace(survivor, other_ids=merged_ids))}
    conn.execute(update(_P).where(_P.c.pk == surviving_pk).values(attrs=attrs))
    conn.execute(delete(_TOKENS).where(_TOKENS.c.kind == TOKEN_PATIENT_NAME, _TOKENS.c.owner_pk == prior_pk))
    return int(moved or 0)


def delete_patient(conn: Connection, pk: int) -> None:
    """Remove a patient row that no study or order refers to any more."""
    conn.execute(delete(_IDS).where(_IDS.c.patient_pk == pk))
    conn.execute(delete(_TOKENS).where(_TOKENS.c.kind == TOKEN_PATIENT_NAME, _TOKENS.c.owner_pk == pk))
    conn.execute(delete(_P).where(_P.c.pk == pk))
