"""Queries over the index (C-FIND now, QIDO-RS later): PS3.4 C.2.2.2 matching per level."""
