"""A `minipacs serve` with a few scheduled steps, and MWL/MPPS clients (pynetdicom, dcmtk findscu)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind, Verification

from archive.patients import OtherId, PatientDemographics
from tests.conftest import Server, dcmtk
from tests.worklist.helpers import HIS
from worklist.service import Worklist
from worklist.types import OrderRequest

HOST = "127.0.0.1"
ASCII_STATION = "OLD_CT"

#: Every Type 1 and 2 return key of the MWL IOD (PS3.4 Table K.6-1), top level.
TOP_KEYS = ("AccessionNumber", "ReferringPhysicianName", "ReferencedStudySequence", "ReferencedPatientSequence",
            "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDsSequence", "PatientBirthDate",
            "PatientSex", "PatientWeight", "MedicalAlerts", "Allergies", "PregnancyStatus", "StudyInstanceUID",
            "RequestingPhysician", "RequestedProcedureDescription", "RequestedProcedureCodeSequence",
            "AdmissionID", "SpecialNeeds", "CurrentPatientLocation", "PatientState", "RequestedProcedureID",
            "RequestedProcedurePriority", "PatientTransportArrangements",
            "ConfidentialityConstraintOnPatientDataDescription")  # fmt: skip
#: ... and inside the Scheduled Procedure Step Sequence item.
SPS_KEYS = ("ScheduledStationAETitle", "ScheduledStationName", "ScheduledProcedureStepLocation",
            "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "Modality",
            "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription",
            "ScheduledProtocolCodeSequence", "PreMedication", "ScheduledProcedureStepID",
            "RequestedContrastAgent", "ScheduledProcedureStepStatus")  # fmt: skip


def steps_order(number: str, accession: str, patient: PatientDemographics, **values: Any) -> OrderRequest:
    return OrderRequest(placer_issuer="HIS", placer_order_number=number, accession_number=accession,
                        patient=patient, **values)  # fmt: skip


AN = PatientDemographics("BN0001", name="Nguyễn^Văn An", birth_date="19680315", sex="M",
                         other_ids=(OtherId("001068012345", "CCCD"), OtherId("DN4010123456789", "BHYT")))
HOA = PatientDemographics("BN0002", name="Trần^Thị Hoa", birth_date="19900101", sex="F")
TUAN = PatientDemographics("BN0003", name="Nguyễn^Công Tuấn", birth_date="19800101", sex="M")
BINH = PatientDemographics("BN0004", name="Nguyễn^Văn Bình", birth_date="19700101", sex="M")


def populate(server: Server) -> None:
    """Four steps: two CT on CT1, one DX on DX1, and a cancelled CT."""
    archive = server.archive()
    try:
        wl = Worklist(archive)
        wl.create(steps_order("O1", "MWL1", AN, procedure_code="CT-SONAO", station_ae_title="CT1",
                              station_name="CT phòng 1", start_date="20261205", start_time="080000",
                              priority="STAT", pregnancy_status=4, performing_physician="Trần^Thị Bình",
                              referring_physician="Lê^Văn Cường"), HIS)  # fmt: skip
        wl.create(steps_order("O2", "MWL2", HOA, modality="DX", procedure_description="X-quang ngực thẳng",
                              station_ae_title="DX1", start_date="20261206", start_time="0930",
                              pregnancy_status=1), HIS)  # fmt: skip
        wl.create(steps_order("O3", "MWL3", TUAN, procedure_code="CT-SONAO", station_ae_title="CT1",
                              start_date="20261206", start_time="140000"), HIS)  # fmt: skip
        wl.create(steps_order("O4", "MWL4", BINH, procedure_code="CT-SONAO", station_ae_title="CT1",
                              start_date="20261205", start_time="100000"), HIS)  # fmt: skip
        wl.cancel("HIS", "O4", HIS)
    finally:
        archive.close()


def element(keyword: str, value: Any = "") -> DataElement:
    """An element as a console would put it in a query; values are not checked (hostile ones too)."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = dictionary_VR(tag)
    if vr == "SQ":
        return DataElement(tag, vr, Sequence(value or []))
    return DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE)


def identifier(sps: dict[str, Any] | None = None, **top: Any) -> Dataset:
    """An MWL query with every required return key, and the given matching values."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in TOP_KEYS:
        ds.add(element(keyword, top.pop(keyword, "")))
    for keyword, value in top.items():
        ds.add(element(keyword, value))
    item = Dataset()
    sps = dict(sps or {})
    for keyword in SPS_KEYS:
        item.add(element(keyword, sps.pop(keyword, "")))
    for keyword, value in sps.items():
        item.add(element(keyword, value))
    ds.ScheduledProcedureStepSequence = Sequence([item])
    return ds


def associate(server: Server, calling: str = "MODALITY") -> Association:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in (ModalityWorklistInformationFind, ModalityPerformedProcedureStep, Verification):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(HOST, server.port, ae_title=server.aet)
    assert assoc.is_established
    return assoc


def mwl_find(assoc: Association, query: Dataset) -> tuple[list[Dataset], Dataset]:
    """(matches, final status dataset) of one MWL C-FIND."""
    matches: list[Dataset] = []
    final = Dataset()
    for status, found in assoc.send_c_find(query, ModalityWorklistInformationFind):
        assert status is not None, "no answer"
        if status.Status in (0xFF00, 0xFF01):
            assert found is not None
            matches.append(found)
        else:
            final = status
    return matches, final


def accessions(matches: list[Dataset]) -> set[str]:
    return {str(m.AccessionNumber) for m in matches}


def findscu_w(server: Server, out_dir: Path, *keys: str, calling: str = "FINDSCU") -> tuple[list[Dataset], str]:
    """dcmtk findscu -W with -k keys; the responses extracted with -X."""
    from pydicom import dcmread

    out_dir.mkdir(parents=True)
    args: list[str] = ["findscu", "-v", "-W", "-aet", calling, "-aec", server.aet, "-X", "-od", str(out_dir)]
    for key in keys:
        args += ["-k", key]
    result = dcmtk(*args, HOST, server.port, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))], result.stdout + result.stderr


def iter_keys(ds: Dataset) -> Iterator[str]:
    for elem in ds:
        yield elem.keyword
