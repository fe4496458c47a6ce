"""DICOM helpers shared by services (file format, identities)."""
