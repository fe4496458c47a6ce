"""pydicom settings of the services: no value validation or warnings while reading what was received.

Validation warnings can quote element values (patient data) and cost time on every instance; the node stores
what it receives and judges only what it needs (the identifying UIDs).
"""

from __future__ import annotations

import warnings

from pydicom import config as pydicom_config


def configure_pydicom() -> None:
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
