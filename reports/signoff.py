"""Sign-off: the version as PDF, signed (PAdES) with the radiologist's own key.

The key is the radiologist's PKCS#12 (reports.identities), unlocked by the PIN
they type at each signature; the PDF shows the certificate that signed it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from reports.identities import SigningIdentities
from reports.pdf import render_pdf
from reports.service import SignedDocument
from reports.signing import sign_pdf
from reports.types import Hospital, ReportStatus, ReportView


class PadesSigner:
    """reports.service.DocumentSigner over the signing identities in the database."""

    def __init__(self, identities: SigningIdentities, hospital: Hospital) -> None:
        self.identities = identities
        self.hospital = hospital

    def sign(self, view: ReportView, username: str, pin: str, share_url: Callable[[], str]) -> SignedDocument:
        key = self.identities.unlock(username, pin)
        signature = view.version.signature
        if signature is not None:
            signature = replace(signature, x509_serial=key.x509_serial, x509_subject=key.x509_subject)
            view = replace(view, version=replace(view.version, signature=signature))
        pdf = render_pdf(view, self.hospital, share_url=share_url())
        amended = view.version.status is ReportStatus.AMENDED
        reason = (f"Sửa đổi kết quả (phiên bản {view.version.number}) / Amended report" if amended
                  else "Ký kết quả chẩn đoán hình ảnh / Diagnostic imaging report sign-off")  # fmt: skip
        signed = sign_pdf(pdf, key, reason=reason, location=self.hospital.name,
                          name=signature.display_name if signature else username)  # fmt: skip
        return SignedDocument(signed, key.x509_serial, key.x509_subject)
