"""What a results page shows of a study: the patient, the study, its series and images.

The patient's share page and the IID study page (viewer/share.py,
viewer/iid.py) draw from the same read of the index, one query per level,
and never open a DICOM file to list a study. `instance_ref` is the only way
those pages reach an image, and it is always scoped to one study: a SOP
Instance UID of another study is simply not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, select

from archive.db import Database
from archive.models import Instance, Patient, Series, Study
from archive.patients import PatientDemographics, read_patient
from archive.query import InstanceRef

_P = cast(Table, Patient.__table__)
_ST = cast(Table, Study.__table__)
_SE = cast(Table, Series.__table__)
_I = cast(Table, Instance.__table__)

#: SOP classes without pixels (PS3.4 B.5): structured reports and key object selections (.88.*),
#: presentation states (.11.*), encapsulated documents such as the report's PDF (.104.*), waveforms
#: (.9.*) and raw data (.66*).
_NO_PIXELS = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.", "1.2.840.10008.5.1.4.1.1.104.",
              "1.2.840.10008.5.1.4.1.1.9.", "1.2.840.10008.5.1.4.1.1.66")  # fmt: skip


def has_pixels(sop_class_uid: str) -> bool:
    return not sop_class_uid.startswith(_NO_PIXELS)


@dataclass(frozen=True)
class ImageItem:
    sop_instance_uid: str
    instance_number: int | None
    frames: int


@dataclass(frozen=True)
class SeriesItem:
    series_instance_uid: str
    modality: str
    series_number: int | None
    description: str
    #: Images in instance-number order (objects without pixels left out).
    images: tuple[ImageItem, ...]


@dataclass(frozen=True)
class StudyItem:
    """A study in a list (an IID patient request)."""

    study_instance_uid: str
    accession_number: str
    study_date: str
    study_time: str
    description: str
    modalities: str
    num_instances: int


@dataclass(frozen=True)
class StudySummary:
    study_pk: int
    patient: PatientDemographics
    study: StudyItem
    series: tuple[SeriesItem, ...]


def _study_item(row: object) -> StudyItem:
    r = cast(Study, row)
    return StudyItem(r.study_instance_uid, r.accession_number, r.study_date, r.study_time, r.study_description,
                     r.modalities_in_study, int(r.num_instances or 0))  # fmt: skip


def study_summary(db: Database, study_uid: str) -> StudySummary | None:
    """The study with its patient and image series, or None when the index has no such study."""
    with db.read() as conn:
        study = conn.execute(select(_ST).where(_ST.c.study_instance_uid == study_uid)).first()
        if study is None:
            return None
        patient = read_patient(conn, study.patient_pk)
        series_rows = conn.execute(select(_SE).where(_SE.c.study_pk == study.pk)).all()
        images = conn.execute(
            select(_I.c.series_pk, _I.c.sop_instance_uid, _I.c.sop_class_uid, _I.c.instance_number,
                   _I.c.number_of_frames)
            .where(_I.c.series_pk.in_([s.pk for s in series_rows]))
        ).all()  # fmt: skip
    by_series: dict[int, list[ImageItem]] = {}
    for i in sorted(images, key=lambda i: (i.instance_number is None, i.instance_number or 0, i.sop_instance_uid)):
        if has_pixels(i.sop_class_uid):
            by_series.setdefault(i.series_pk, []).append(ImageItem(i.sop_instance_uid, i.instance_number,
                                                                   int(i.number_of_frames or 1)))  # fmt: skip
    series = [SeriesItem(s.series_instance_uid, s.modality, s.series_number, s.series_description,
                         tuple(by_series[s.pk])) for s in series_rows if s.pk in by_series]  # fmt: skip
    series.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid))
    return StudySummary(int(study.pk), patient, _study_item(study), tuple(series))


def find_studies(db: Database, *, study_uids: Sequence[str] = (), accession_numbers: Sequence[str] = (),
                 patient_id: str = "", issuer: str | None = None, limit: int = 200) -> list[StudyItem]:  # fmt: skip
    """Studies by UID or accession number, or all of one patient's (newest first).

    `issuer` None matches the Patient ID under any issuer; "" only without one.
    """
    stmt = select(_ST).join(_P, _P.c.pk == _ST.c.patient_pk)
    if study_uids:
        stmt = stmt.where(_ST.c.study_instance_uid.in_(list(study_uids)))
    if accession_numbers:
        stmt = stmt.where(_ST.c.accession_number.in_(list(accession_numbers)))
    if patient_id:
        stmt = stmt.where(_P.c.patient_id == patient_id)
        if issuer is not None:
            stmt = stmt.where(_P.c.issuer_of_patient_id == issuer)
    if not (study_uids or accession_numbers or patient_id):
        return []
    stmt = stmt.order_by(_ST.c.study_date.desc(), _ST.c.study_time.desc(), _ST.c.pk.desc()).limit(limit)
    with db.read() as conn:
        return [_study_item(r) for r in conn.execute(stmt).all()]


def instance_ref(db: Database, study: int | str, sop_instance_uid: str) -> InstanceRef | None:
    """One instance of the study (its index key, or its Study Instance UID), or None: never another study's."""
    stmt = (select(_I.c.sop_class_uid, _I.c.sop_instance_uid, _I.c.transfer_syntax_uid, _I.c.storage_key,
                   _I.c.size_bytes, _ST.c.study_instance_uid, _SE.c.series_instance_uid)
            .join(_SE, _SE.c.pk == _I.c.series_pk).join(_ST, _ST.c.pk == _SE.c.study_pk)
            .where(_I.c.sop_instance_uid == sop_instance_uid))  # fmt: skip
    if isinstance(study, int):
        stmt = stmt.where(_SE.c.study_pk == study)
    else:
        stmt = stmt.where(_ST.c.study_instance_uid == study)
    with db.read() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return InstanceRef(row.sop_class_uid, row.sop_instance_uid, row.transfer_syntax_uid, row.storage_key,
                       int(row.size_bytes), row.study_instance_uid, row.series_instance_uid)  # fmt: skip
