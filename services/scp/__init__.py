"""The DICOM SCP: C-ECHO and C-STORE into the object store, events onto the queue."""
