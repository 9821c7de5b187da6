"""Radiology reports: templates, draft → final → amended, sign-off, PDF, DICOM SR,
HL7 ORU out, FHIR DiagnosticReport, claim values, patient share links."""
