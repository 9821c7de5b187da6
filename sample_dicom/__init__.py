"""Synthetic sample DICOM studies; see ``generate.py`` and ``README.md``."""
