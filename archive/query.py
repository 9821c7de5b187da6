"""Finding patients, studies, series and instances in the index.

Builds on the matching engine: this module says which column answers which
attribute at which level (PS3.4 C.6.1/C.6.2, PS3.18 10.6) and turns matched
rows back into datasets from the stored ``attrs`` plus the computed keys
(counts, ModalitiesInStudy, ...). C-FIND and QIDO-RS both come here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from sqlalchemy import Select, func, select
from sqlalchemy.sql.elements import ColumnElement

from archive import attributes
from archive.db import Database
from archive.errors import InvalidQuery
from archive.matching import (
    AnyOf,
    Condition,
    Exact,
    ExistsTarget,
    IntegerTarget,
    OwnerInTarget,
    PersonNameTarget,
    RangeTarget,
    SequenceTarget,
    Target,
    TextTarget,
    UidTarget,
    Universal,
    condition_for,
    where,
)
from archive.models import (
    Instance,
    NameToken,
    Patient,
    PatientIdentifier,
    Series,
    SeriesRequest,
    Study,
)


class Level(IntEnum):
    """Query/Retrieve levels, ordered from the top of the hierarchy."""

    PATIENT = 1
    STUDY = 2
    SERIES = 3
    IMAGE = 4

    @classmethod
    def parse(cls, value: object) -> Level:
        text = str(value or "").strip().upper()
        if text == "INSTANCE":
            text = "IMAGE"
        try:
            return cls[text]
        except KeyError:
            raise InvalidQuery(
                f"QueryRetrieveLevel {value!r} is not PATIENT, STUDY, SERIES or IMAGE"
            ) from None


def _t(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


P, S, SE, I = Patient.__table__.c, Study.__table__.c, Series.__table__.c, Instance.__table__.c
_TOKENS = NameToken.__table__.c
_IDS = PatientIdentifier.__table__.c
_REQ = SeriesRequest.__table__.c
# ModalitiesInStudy matches through its own alias of series, so a series-level
# query can say Modality too without the two conditions tangling.
_MIS = Series.__table__.alias("modality_series").c

#: Matching keys: attribute -> (level, how to match it).
TARGETS: dict[int, tuple[Level, Target]] = {
    _t("PatientID"): (Level.PATIENT, TextTarget(P.patient_id)),
    _t("IssuerOfPatientID"): (Level.PATIENT, TextTarget(P.issuer_of_patient_id)),
    _t("PatientName"): (
        Level.PATIENT,
        PersonNameTarget(P.patient_name_key, P.pk, _TOKENS.owner_pk, _TOKENS.kind, _TOKENS.token,
                         attributes.TOKEN_PATIENT_NAME),
    ),
    _t("PatientBirthDate"): (Level.PATIENT, RangeTarget(P.patient_birth_date)),
    _t("PatientSex"): (Level.PATIENT, TextTarget(P.patient_sex)),
    _t("OtherPatientIDs"): (Level.PATIENT, OwnerInTarget(P.pk, _IDS.patient_pk, TextTarget(_IDS.value))),
    _t("OtherPatientIDsSequence"): (
        Level.PATIENT,
        SequenceTarget(_IDS.patient_pk == P.pk, {
            _t("PatientID"): TextTarget(_IDS.value),
            _t("IssuerOfPatientID"): TextTarget(_IDS.issuer),
            _t("TypeOfPatientID"): TextTarget(_IDS.type_of_id),
        }),
    ),
    _t("StudyInstanceUID"): (Level.STUDY, UidTarget(S.study_instance_uid)),
    _t("StudyDate"): (Level.STUDY, RangeTarget(S.study_date)),
    _t("StudyTime"): (Level.STUDY, RangeTarget(S.study_time)),
    _t("AccessionNumber"): (Level.STUDY, TextTarget(S.accession_number)),
    _t("StudyID"): (Level.STUDY, TextTarget(S.study_id)),
    _t("StudyDescription"): (Level.STUDY, TextTarget(S.study_description)),
    _t("ReferringPhysicianName"): (
        Level.STUDY,
        PersonNameTarget(S.referring_physician_name_key, S.pk, _TOKENS.owner_pk, _TOKENS.kind,
                         _TOKENS.token, attributes.TOKEN_REFERRING_PHYSICIAN),
    ),
    _t("ModalitiesInStudy"): (
        Level.STUDY,
        ExistsTarget(_MIS.study_pk == S.pk, TextTarget(_MIS.modality)),
    ),
    _t("SeriesInstanceUID"): (Level.SERIES, UidTarget(SE.series_instance_uid)),
    _t("Modality"): (Level.SERIES, TextTarget(SE.modality)),
    _t("SeriesNumber"): (Level.SERIES, IntegerTarget(SE.series_number)),
    _t("SeriesDescription"): (Level.SERIES, TextTarget(SE.series_description)),
    _t("SeriesDate"): (Level.SERIES, RangeTarget(SE.series_date)),
    _t("SeriesTime"): (Level.SERIES, RangeTarget(SE.series_time)),
    _t("BodyPartExamined"): (Level.SERIES, TextTarget(SE.body_part_examined)),
    _t("PerformedProcedureStepStartDate"): (
        Level.SERIES, RangeTarget(SE.performed_procedure_step_start_date)),
    _t("PerformedProcedureStepStartTime"): (
        Level.SERIES, RangeTarget(SE.performed_procedure_step_start_time)),
    _t("RequestAttributesSequence"): (
        Level.SERIES,
        SequenceTarget(_REQ.series_pk == SE.pk, {
            _t("RequestedProcedureID"): TextTarget(_REQ.requested_procedure_id),
            _t("ScheduledProcedureStepID"): TextTarget(_REQ.scheduled_procedure_step_id),
            _t("AccessionNumber"): TextTarget(_REQ.accession_number),
        }),
    ),
    _t("SOPInstanceUID"): (Level.IMAGE, UidTarget(I.sop_instance_uid)),
    _t("SOPClassUID"): (Level.IMAGE, UidTarget(I.sop_class_uid)),
    _t("InstanceNumber"): (Level.IMAGE, IntegerTarget(I.instance_number)),
    _t("ContentDate"): (Level.IMAGE, RangeTarget(I.content_date)),
    _t("ContentTime"): (Level.IMAGE, RangeTarget(I.content_time)),
}  # fmt: skip

#: Unique key of each level (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEYS: dict[Level, int] = {
    Level.PATIENT: _t("PatientID"),
    Level.STUDY: _t("StudyInstanceUID"),
    Level.SERIES: _t("SeriesInstanceUID"),
    Level.IMAGE: _t("SOPInstanceUID"),
}

_COMPUTED_LEVEL: dict[int, Level] = {
    _t("NumberOfPatientRelatedStudies"): Level.PATIENT,
    _t("NumberOfPatientRelatedSeries"): Level.PATIENT,
    _t("NumberOfPatientRelatedInstances"): Level.PATIENT,
    _t("NumberOfStudyRelatedSeries"): Level.STUDY,
    _t("NumberOfStudyRelatedInstances"): Level.STUDY,
    _t("ModalitiesInStudy"): Level.STUDY,
    _t("SOPClassesInStudy"): Level.STUDY,
    _t("NumberOfSeriesRelatedInstances"): Level.SERIES,
    _t("AvailableTransferSyntaxUID"): Level.IMAGE,
}

_KEYWORD_LEVEL: dict[int, Level] = {
    **{_t(k): Level.PATIENT for k in attributes.PATIENT_KEYWORDS},
    **{_t(k): Level.STUDY for k in attributes.STUDY_KEYWORDS},
    **{_t(k): Level.SERIES for k in attributes.SERIES_KEYWORDS},
    **{_t(k): Level.IMAGE for k in attributes.INSTANCE_KEYWORDS},
    **_COMPUTED_LEVEL,
}

# Keys that steer the query rather than match anything.
_CONTROL_KEYS = {
    _t("QueryRetrieveLevel"),
    _t("SpecificCharacterSet"),
    _t("RetrieveAETitle"),
    _t("InstanceAvailability"),
    _t("TimezoneOffsetFromUTC"),
}
_PAGE = 500


@dataclass
class Query:
    """A parsed query: what to match at which level and which keys to return."""

    level: Level
    conditions: dict[int, Condition] = field(default_factory=dict)
    #: The identifier as sent: its elements are the return keys (with their VRs
    #: and, for sequences, the item keys wanted back).
    return_keys: Dataset = field(default_factory=Dataset)
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class InstanceRef:
    """What a retrieve needs to send one instance."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    storage_key: str
    size_bytes: int
    study_instance_uid: str
    series_instance_uid: str


def key_level(tag: int) -> Level | None:
    """The level an attribute belongs to, or None if the index does not know it."""
    if tag in TARGETS:
        return TARGETS[tag][0]
    return _KEYWORD_LEVEL.get(tag)


def query_from_identifier(identifier: Dataset, patient_root: bool) -> Query:
    """Parse a C-FIND/C-MOVE/C-GET identifier (PS3.4 C.4) into a Query."""
    if "QueryRetrieveLevel" not in identifier:
        raise InvalidQuery("the identifier has no QueryRetrieveLevel (0008,0052)")
    level = Level.parse(identifier.QueryRetrieveLevel)
    if level is Level.PATIENT and not patient_root:
        raise InvalidQuery("PATIENT level queries need the Patient Root information model")
    conditions: dict[int, Condition] = {}
    for element in identifier:
        tag = int(element.tag)
        if tag in _CONTROL_KEYS or element.tag.group in (0x0000, 0x0002):
            continue
        owner = key_level(tag)
        if owner is None or owner > level:
            continue  # keys below the query level, or unknown: returned empty
        condition = condition_for(element)
        if not isinstance(condition, Universal):
            conditions[tag] = condition
    return Query(level=level, conditions=conditions, return_keys=identifier)


def require_unique_key(query: Query) -> None:
    """A retrieve must name what it wants (PS3.4 C.4.2.2.1): never 'everything'."""
    tag = UNIQUE_KEYS[query.level]
    # A single value or a list of values: a wildcard (PatientID "BN*") would
    # retrieve every match, which is a query, not a retrieve (PS3.4 C.4.2.2.1).
    if not isinstance(query.conditions.get(tag), (Exact, AnyOf)):
        raise InvalidQuery(
            f"a {query.level.name} level retrieve needs {keyword_for_tag(tag)} "
            f"({Tag(tag)}) with a value, or a list of values, without wildcards"
        )


class QueryService:
    """Answers queries from the index alone."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def find(self, query: Query) -> Iterator[Dataset]:
        """One dataset per match, with the keys the query asked for."""
        for attrs in self.find_json(query):
            yield dataset_from_json(attrs)

    def find_json(self, query: Query) -> Iterator[dict[str, Any]]:
        """One DICOM JSON object (PS3.18 F.2) per match, fetched in pages so no
        read stays open for long.

        The form the index stores: QIDO-RS answers with it as it is, and the
        DICOM service encodes it straight to the wire without building a
        pydicom Dataset per match.
        """
        base_pk = _BASE_PK[query.level]
        stmt = self._select(query)
        if query.limit is not None or query.offset:
            stmt = stmt.order_by(base_pk).offset(query.offset)
            if query.limit is not None:
                stmt = stmt.limit(query.limit)
            with self._db.read() as conn:
                rows = conn.execute(stmt).mappings().all()
            for row in rows:
                yield self._response(query, row)
            return
        last = 0
        while True:
            page = stmt.where(base_pk > last).order_by(base_pk).limit(_PAGE)
            with self._db.read() as conn:
                rows = conn.execute(page).mappings().all()
            for row in rows:
                yield self._response(query, row)
            if len(rows) < _PAGE:
                return
            last = rows[-1]["base_pk"]

    def count(self, query: Query) -> int:
        """How many entities match, ignoring limit and offset."""
        stmt = select(func.count()).select_from(self._select(query).subquery())
        with self._db.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def instances(self, query: Query) -> list[InstanceRef]:
        """The instances a C-MOVE/C-GET (or a WADO retrieve) of `query` covers."""
        clauses = self._clauses(query)
        stmt = (
            select(I.sop_class_uid, I.sop_instance_uid, I.transfer_syntax_uid, I.storage_key,
                   I.size_bytes, S.study_instance_uid, SE.series_instance_uid)
            .select_from(_joined(Level.IMAGE))
            .where(*clauses)
            .order_by(S.pk, SE.series_number, SE.pk, I.instance_number, I.pk)
        )  # fmt: skip
        with self._db.read() as conn:
            return [InstanceRef(**row) for row in conn.execute(stmt).mappings()]

    def _clauses(self, query: Query) -> list[ColumnElement[bool]]:
        targets = {tag: target for tag, (lvl, target) in TARGETS.items() if lvl <= query.level}
        return where(targets, query.conditions)

    def _select(self, query: Query) -> Select[Any]:
        level = query.level
        columns: list[Any] = [_BASE_PK[level].label("base_pk"), P.attrs.label("p_attrs")]
        if level >= Level.STUDY:
            columns += [S.attrs.label("st_attrs"), S.num_series, S.num_instances.label("st_instances"),
                        S.modalities_in_study, S.pk.label("study_pk")]  # fmt: skip
        if level >= Level.SERIES:
            columns += [SE.attrs.label("se_attrs"), SE.num_instances.label("se_instances")]
        if level is Level.IMAGE:
            columns += [I.attrs.label("i_attrs"), I.transfer_syntax_uid]
        wanted = {int(e.tag) for e in query.return_keys}
        if level is Level.PATIENT and wanted & _PATIENT_COUNTS:
            columns += [
                select(func.count(S.pk)).where(S.patient_pk == P.pk)
                .scalar_subquery().label("p_studies"),
                select(func.coalesce(func.sum(S.num_series), 0)).where(S.patient_pk == P.pk)
                .scalar_subquery().label("p_series"),
                select(func.coalesce(func.sum(S.num_instances), 0)).where(S.patient_pk == P.pk)
                .scalar_subquery().label("p_instances"),
            ]  # fmt: skip
        return select(*columns).select_from(_joined(level)).where(*self._clauses(query))

    def _response(self, query: Query, row: Any) -> dict[str, Any]:
        merged: dict[str, Any] = dict(row["p_attrs"])
        for name in ("st_attrs", "se_attrs", "i_attrs"):
            if name in row:
                merged.update(row[name])
        wanted = [e for e in query.return_keys if int(e.tag) not in _CONTROL_KEYS
                  and e.tag.group not in (0x0000, 0x0002)]  # fmt: skip
        wanted_tags = {int(e.tag) for e in wanted}
        for level in Level:
            if level <= query.level:
                wanted_tags.add(UNIQUE_KEYS[level])
        out: dict[int, dict[str, Any]] = {}
        for key, element in merged.items():
            tag = int(key, 16)
            if tag in wanted_tags:
                out[tag] = element
        non_ascii = _has_non_ascii(out)
        out.update(self._computed(query, row, wanted_tags))
        for element in wanted:
            tag = int(element.tag)
            owner = key_level(tag)
            if tag not in out:
                out[tag] = {"vr": element.VR}
            elif element.VR == "SQ" and owner is not None and owner <= query.level:
                out[tag] = _select_item_keys(out[tag], element)
        for tag in wanted_tags - {int(e.tag) for e in wanted}:
            if tag not in out:
                out[tag] = {"vr": dictionary_VR(tag)}
        if non_ascii:
            out[_CHARSET] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        return {f"{tag:08X}": out[tag] for tag in sorted(out)}

    def _computed(self, query: Query, row: Any, wanted: set[int]) -> dict[int, dict[str, Any]]:
        """The keys the index counts rather than stores, as JSON elements."""
        values: dict[int, Any] = {}
        level = query.level

        def want(keyword: str, at: Level) -> bool:
            return _t(keyword) in wanted and level >= at

        if level is Level.PATIENT:
            for keyword, column in (("NumberOfPatientRelatedStudies", "p_studies"),
                                    ("NumberOfPatientRelatedSeries", "p_series"),
                                    ("NumberOfPatientRelatedInstances", "p_instances")):  # fmt: skip
                if want(keyword, Level.PATIENT):
                    values[_t(keyword)] = int(row[column])
        if want("NumberOfStudyRelatedSeries", Level.STUDY) and level is Level.STUDY:
            values[_t("NumberOfStudyRelatedSeries")] = int(row["num_series"])
        if want("NumberOfStudyRelatedInstances", Level.STUDY) and level is Level.STUDY:
            values[_t("NumberOfStudyRelatedInstances")] = int(row["st_instances"])
        if want("ModalitiesInStudy", Level.STUDY):
            values[_t("ModalitiesInStudy")] = [m for m in row["modalities_in_study"].split("\\") if m]
        if want("SOPClassesInStudy", Level.STUDY):
            values[_t("SOPClassesInStudy")] = self._sop_classes(row["study_pk"])
        if want("NumberOfSeriesRelatedInstances", Level.SERIES) and level is Level.SERIES:
            values[_t("NumberOfSeriesRelatedInstances")] = int(row["se_instances"])
        if want("AvailableTransferSyntaxUID", Level.IMAGE):
            values[_t("AvailableTransferSyntaxUID")] = [row["transfer_syntax_uid"]]
        return {tag: _json_element(tag, value) for tag, value in values.items()}

    def _sop_classes(self, study_pk: int) -> list[str]:
        stmt = (
            select(I.sop_class_uid).distinct()
            .join(Series.__table__, SE.pk == I.series_pk)
            .where(SE.study_pk == study_pk)
            .order_by(I.sop_class_uid)
        )  # fmt: skip
        with self._db.read() as conn:
            return list(conn.execute(stmt).scalars())


_BASE_PK = {Level.PATIENT: P.pk, Level.STUDY: S.pk, Level.SERIES: SE.pk, Level.IMAGE: I.pk}
_PATIENT_COUNTS = {
    _t("NumberOfPatientRelatedStudies"),
    _t("NumberOfPatientRelatedSeries"),
    _t("NumberOfPatientRelatedInstances"),
}


def _joined(level: Level) -> Any:
    """The level's table joined to every level above it."""
    if level is Level.PATIENT:
        return Patient.__table__
    joined = Study.__table__.join(Patient.__table__, S.patient_pk == P.pk)
    if level >= Level.SERIES:
        joined = Series.__table__.join(joined, SE.study_pk == S.pk)
    if level is Level.IMAGE:
        joined = Instance.__table__.join(joined, I.series_pk == SE.pk)
    return joined


def _select_item_keys(element: dict[str, Any], query_element: DataElement) -> dict[str, Any]:
    """Keep only the item keys the query asked for (all of them for an empty item)."""
    items: Sequence[Dataset] = query_element.value or []
    if not items or len(items[0]) == 0:
        return element
    keys = {f"{int(e.tag):08X}": e.VR for e in items[0]}
    selected = [
        {key: item.get(key, {"vr": vr}) for key, vr in sorted(keys.items())}
        for item in element.get("Value", [])
    ]
    return {"vr": "SQ", "Value": selected} if selected else {"vr": "SQ"}


def _json_element(tag: int, value: Any) -> dict[str, Any]:
    if not isinstance(value, list):
        value = [value]
    element: dict[str, Any] = {"vr": dictionary_VR(tag)}
    if value:
        element["Value"] = value
    return element


_CHARSET = _t("SpecificCharacterSet")


def dataset_from_json(attrs: dict[str, Any]) -> Dataset:
    """A dataset from the DICOM JSON model (PS3.18 F.2) as the index stores it.

    ``Dataset.from_json`` handles every corner of the model (bulk data URIs,
    inline binary) and costs about 0.4 ms per C-FIND match; the index never
    stores binary values, so the few shapes it does store are converted here.
    """
    ds = Dataset()
    for key, element in attrs.items():
        vr = element.get("vr", "UN")
        values = element.get("Value")
        if values is None:
            value: Any = empty_value_for_VR(vr)
        elif vr == "SQ":
            value = DicomSequence([dataset_from_json(item) for item in values])
        elif vr == "PN":
            value = [_person_name(v) for v in values]
        elif vr == "AT":
            value = [int(v, 16) for v in values]
        else:
            value = values
        if isinstance(value, list) and len(value) == 1 and vr != "SQ":
            value = value[0]
        ds.add(DataElement(int(key, 16), vr, value))
    return ds


def _person_name(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value or "")
    groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


def _has_non_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isascii()
    if isinstance(value, dict):
        return any(_has_non_ascii(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_ascii(v) for v in value)
    return False

