"""HIS orders in, the modality worklist out, and studies reconciled with orders.

Orders arrive over HL7 v2 (worklist.mllp), the JSON API and FHIR (viewer/);
they become scheduled procedure steps (worklist.models) that the DICOM edge
serves as the Modality Worklist and updates from MPPS. Arriving studies are
matched to steps by accession number (worklist.reconcile).
"""
