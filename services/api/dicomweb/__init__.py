"""DICOMweb (PS3.18) under /dicomweb: QIDO-RS (qido), WADO-RS (wado, frames), STOW-RS (stow)."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.dicomweb import frames, qido, stow, wado

router = APIRouter()
for _part in (qido.router, wado.router, frames.router, stow.router):
    router.include_router(_part)
