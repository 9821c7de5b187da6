"""The HTTP edge: DICOMweb (QIDO, WADO-RS/URI, STOW, rendered), login, health, and who may use them.

A Flask app over the same Archive the DICOM edge uses; gunicorn serves it
(appliance/http.py starts and stops it with the other listeners).
"""

from __future__ import annotations

from viewer.app import create_app

__all__ = ["create_app"]
