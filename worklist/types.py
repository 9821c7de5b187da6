"""What an order says, whichever door it came through (HL7 v2, JSON, FHIR, walk-in).

The edges translate their message into these; the worklist service never
sees HL7 segments or JSON field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from archive.patients import OtherId, PatientDemographics


class StepStatus(str, Enum):
    """Scheduled Procedure Step Status (0040,0020) plus CANCELLED for orders the HIS withdrew."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (StepStatus.COMPLETED, StepStatus.DISCONTINUED, StepStatus.CANCELLED)


#: Requested Procedure Priority (0040,1003) values.
PRIORITIES = ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")


@dataclass(frozen=True)
class OrderRequest:
    """A new or changed order. Empty strings mean "not given" (filled from the catalogue or generated)."""

    #: The ordering system (HL7 MSH-3, the JSON mapping's name, "FHIR", "WALKIN").
    placer_issuer: str
    #: The HIS order number: with placer_issuer, the order's identity (idempotency key).
    placer_order_number: str
    patient: PatientDemographics
    filler_order_number: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""
    requested_procedure_id: str = ""
    #: Scheduled Procedure Step ID; empty: the accession number.
    sps_id: str = ""
    procedure_code: str = ""
    procedure_scheme: str = ""
    procedure_description: str = ""
    modality: str = ""
    station_ae_title: str = ""
    station_name: str = ""
    #: YYYYMMDD and HHMMSS; empty: now.
    start_date: str = ""
    start_time: str = ""
    performing_physician: str = ""
    referring_physician: str = ""
    priority: str = "ROUTINE"
    pregnancy_status: int | None = None
    reason: str = ""
    #: Further attributes to hand to the modality, as DICOM JSON (admission id, allergies...).
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepView:
    """A scheduled procedure step as the HTTP and CLI edges show it."""

    accession_number: str
    placer_issuer: str
    placer_order_number: str
    filler_order_number: str
    study_instance_uid: str
    requested_procedure_id: str
    procedure_code: str
    procedure_scheme: str
    procedure_description: str
    service_code: str
    indicator_code: str
    sps_id: str
    modality: str
    station_ae_title: str
    station_name: str
    start_date: str
    start_time: str
    performing_physician: str
    referring_physician: str
    priority: str
    pregnancy_status: int | None
    reason: str
    status: str
    patient: PatientDemographics
    created_at: str
    updated_at: str

    def as_json(self) -> dict[str, Any]:
        """A plain JSON object (the /api edge's shape)."""
        out = {k: v for k, v in self.__dict__.items() if k != "patient"}
        p = self.patient
        out["patient"] = {
            "patient_id": p.patient_id, "issuer": p.issuer, "name": p.name,
            "birth_date": p.birth_date, "sex": p.sex,
            "other_ids": [{"value": o.value, "issuer": o.issuer, "type": o.type_of_id} for o in p.other_ids],
        }  # fmt: skip
        return out


__all__ = ["PRIORITIES", "OrderRequest", "OtherId", "PatientDemographics", "StepStatus", "StepView"]
