"""The DICOM edge: Verification, Storage and Query/Retrieve over DIMSE (pynetdicom)."""

from __future__ import annotations

from dicom_scp.server import DicomConfig, DicomService

__all__ = ["DicomConfig", "DicomService"]
