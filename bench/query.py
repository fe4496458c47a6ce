#!/usr/bin/env python3
"""C-FIND (and QIDO-RS) latency on PostgreSQL at 100,000 and 1,000,000 instances.

Usage (from the repository root):

    .venv/bin/python bench/query.py                          # 100k then 1M instances, 50 runs per query
    .venv/bin/python bench/query.py --sizes 20000 --runs 10  # quick check
    .venv/bin/python bench/query.py --explain                # also EXPLAIN ANALYZE every SQL statement of a query

What it does:
1. For each size, creates a fresh database ``pacs_bench_q<pid>_<size>`` on PostgreSQL (127.0.0.1:5432, user
   postgres), runs ``pacs migrate``, and loads synthetic patients, studies, series and instances with COPY (the
   same seed, so the 1M database starts with the 100k one's rows). The rows are those the real indexer writes: one
   pydicom dataset per study goes through ``services.indexer.extract.extract`` (so the folded/search name columns
   and the DICOM JSON ``attributes`` are the indexer's own), then the series and instance attributes are patched
   into that JSON for each row. VACUUM ANALYZE afterwards (as autovacuum would have done on a live archive).
2. Starts ``pacs scp`` and ``pacs api`` on each database (all at once), registers a modality allowed to find
   (PUT /api/modalities/bench-find), and times the whole dcmtk ``findscu`` process (``TCP_NODELAY=1``):
   warm-up rounds, then --runs rounds; each round runs a bare ``echoscu`` and every query once against every
   size, interleaved, so that the load of this shared machine hits every size alike. Median and p95.
3. If the API has a ``/dicomweb/studies`` route, times the same queries over QIDO-RS (one keep-alive HTTP
   connection per node), interleaved the same way.
4. Times ``shared.query.search.run_query`` in-process (the server's SQL + Python share, no DICOM); with
   --explain prints EXPLAIN (ANALYZE, BUFFERS) of every statement it runs.
5. Drops the databases (unless --keep-db) and stops every process it started.

Queries (the values are taken from the first size's rows, so they are the same at every size):
- study level by PatientID (one patient and its studies), by PatientName ``SMI*`` (the generator gives SMI…
  surnames to exactly 10 patients, so the answer has the same size at every size), by StudyDate range (the most
  recent dates holding about 20 studies; the range is chosen per size so that the answer stays ~20 studies),
  by StudyDate over one whole year (informative: its answer grows with the archive);
- series level: the series of one study.
Study-level queries ask for the keys a workstation asks for, computed keys (ModalitiesInStudy,
NumberOfStudyRelated*) and one key outside the index (InstitutionName, answered from the stored attributes).

Needs: PostgreSQL on 127.0.0.1:5432 (trust auth), dcmtk (findscu, echoscu), .venv with the project installed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client as httpclient
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import (  # noqa: E402
    HOST,
    PACS,
    Process,
    add_source_argument,
    configure_source,
    free_port,
    http,
    log,
    machine,
    median,
    pacs_command,
    pacs_cwd,
    pacs_env,
    percentile,
    tcp_accepts,
)

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
FIND_AET = "BENCHFIND"
NODE_AET = "PACS"
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as generate_uid() would use
SMI_PATIENTS = 10

# --------------------------------------------------------------------------------------------
# Synthetic archive
# --------------------------------------------------------------------------------------------

SURNAMES = [
    "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ", "HERNANDEZ",
    "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE", "JACKSON", "MARTIN", "LEE", "PEREZ",
    "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS", "ROBINSON", "WALKER", "YOUNG", "ALLEN",
    "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN", "HILL", "FLORES", "GREEN", "ADAMS", "NELSON", "BAKER", "HALL",
    "RIVERA", "CAMPBELL", "MITCHELL", "CARTER", "ROBERTS", "MUELLER", "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER",
    "MEYER", "WAGNER", "BECKER", "SCHULZ", "HOFFMANN", "KOCH", "RICHTER", "KLEIN", "WOLF", "NEUMANN", "DUBOIS",
    "MOREAU", "LAURENT", "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX", "ROSSI", "RUSSO", "FERRARI", "ESPOSITO",
    "BIANCHI", "ROMANO", "COLOMBO", "JANSEN", "DE JONG", "VAN DIJK", "BAKKER", "VISSER", "NOWAK", "KOWALSKI",
    "WISNIEWSKI", "HANSEN", "JOHANSEN", "NIELSEN", "LARSEN", "ANDERSEN", "PEDERSEN", "KARLSSON", "NILSSON",
    "ERIKSSON", "LINDQVIST", "OBRIEN", "MURPHY", "KELLY", "WALSH", "BYRNE", "RYAN", "PATEL", "SHAH", "KHAN",
    "SINGH", "KUMAR", "CHEN", "WANG", "LI", "ZHANG", "LIU", "YANG", "HUANG", "ZHAO", "WU", "ZHOU", "SATO",
    "SUZUKI", "TAKAHASHI", "TANAKA", "WATANABE", "ITO", "NAKAMURA", "KOBAYASHI", "KIM", "PARK", "CHOI", "JUNG",
]
NON_ASCII_SURNAMES = [  # about 15 % of patients (UTF-8 datasets, SpecificCharacterSet ISO_IR 192)
    "MÜLLER", "SCHRÖDER", "GÖTZ", "BÖHM", "KRÄMER", "JÄGER", "GARCÍA", "MARTÍNEZ", "PÉREZ", "GÓMEZ", "SÁNCHEZ",
    "MUÑOZ", "NÚÑEZ", "LEFÈVRE", "FRANÇOIS", "GÉRARD", "HÉLÈNE", "ØSTERGÅRD", "SØRENSEN", "ÅBERG", "LJUNGSTRÖM",
    "DVOŘÁK", "NOVÁK", "KRÁL", "WÓJCIK", "ŁUKASIK", "ÇELIK", "YILDIZ", "ŞAHIN", "ÖZTÜRK", "CONCEIÇÃO", "GONÇALVES",
]
JAPANESE = [("YAMADA", "山田"), ("SATO", "佐藤"), ("SUZUKI", "鈴木"), ("TANAKA", "田中"), ("ITO", "伊藤")]
GIVEN_NAMES = [
    "JAMES", "MARY", "JOHN", "PATRICIA", "ROBERT", "JENNIFER", "MICHAEL", "LINDA", "WILLIAM", "ELIZABETH", "DAVID",
    "BARBARA", "RICHARD", "SUSAN", "JOSEPH", "JESSICA", "THOMAS", "SARAH", "ANNA", "PETER", "KLAUS", "MARIA",
    "JOSÉ", "JÖRG", "RENÉ", "ZOË", "CHLOÉ", "BJÖRN", "SØREN", "AGNIESZKA", "HIROSHI", "YUKI", "MIN-JUN", "WEI",
]
SMI_SURNAMES = ["SMITH", "SMIRNOV", "SMITS", "SMILEY", "SMIT"]
REFERRERS = ["HOUSE^GREGORY", "WATSON^JOHN", "GREY^MEREDITH", "KILDARE^JAMES", "QUINN^MICHAELA", "CARTER^JOHN"]
INSTITUTIONS = ["General Hospital", "St. Mary Clinic", "University Medical Center", "Klinikum Süd", "Imaging Center"]

TS_EXPLICIT = "1.2.840.10008.1.2.1"
TS_JPEG_LS = "1.2.840.10008.1.2.4.80"


@dataclass(frozen=True)
class Profile:
    modality: str
    weight: int
    sop_class: str
    series: tuple[int, int]        # series per study (min, max)
    per_series: tuple[int, int]    # instances per series (min, max)
    rows: int
    descriptions: tuple[str, ...]
    series_descriptions: tuple[str, ...]
    body_parts: tuple[str, ...]
    syntax: str = TS_EXPLICIT


PROFILES = (
    Profile("CT", 25, "1.2.840.10008.5.1.4.1.1.2", (2, 4), (20, 120), 512,
            ("CT THORAX ABDOMEN", "CT HEAD W/O CONTRAST", "CT CHEST", "CT ANGIO"),
            ("AXIAL 5mm", "AXIAL 1mm BONE", "CORONAL MPR", "SAGITTAL MPR", "SCOUT"), ("CHEST", "HEAD", "ABDOMEN")),
    Profile("MR", 20, "1.2.840.10008.5.1.4.1.1.4", (3, 6), (15, 40), 256,
            ("MR BRAIN", "MR KNEE LEFT", "MR LUMBAR SPINE", "MRI ABDOMEN"),
            ("T1 SAG", "T2 AX", "FLAIR", "DWI", "T1 POST GD", "STIR COR"), ("BRAIN", "KNEE", "LSPINE")),
    Profile("CR", 20, "1.2.840.10008.5.1.4.1.1.1", (1, 2), (1, 2), 2048,
            ("XR CHEST PA LAT", "XR HAND", "XR KNEE"), ("PA", "LAT", "AP"), ("CHEST", "HAND", "KNEE"),
            TS_JPEG_LS),
    Profile("US", 12, "1.2.840.10008.5.1.4.1.1.6.1", (1, 1), (10, 40), 480,
            ("US ABDOMEN", "US THYROID", "US OB"), ("ABDOMEN", "THYROID"), ("ABDOMEN", "NECK")),
    Profile("MG", 10, "1.2.840.10008.5.1.4.1.1.1.2", (1, 1), (4, 4), 3328,
            ("MAMMO SCREENING BILATERAL",), ("L CC", "R CC", "L MLO", "R MLO"), ("BREAST",), TS_JPEG_LS),
    Profile("PT", 3, "1.2.840.10008.5.1.4.1.1.128", (2, 3), (50, 200), 128,
            ("PET-CT WHOLE BODY",), ("PET AC", "PET NAC", "CT AC"), ("WHOLEBODY",)),
    Profile("DX", 10, "1.2.840.10008.5.1.4.1.1.1.1", (1, 2), (1, 3), 2500,
            ("XR SHOULDER", "XR FOOT", "XR PELVIS"), ("AP", "LAT", "OBLIQUE"), ("SHOULDER", "FOOT", "PELVIS"),
            TS_JPEG_LS),
)
DATE_FIRST = dt.date(2012, 1, 1)
DATE_DAYS = (dt.date(2025, 12, 31) - DATE_FIRST).days


def _escape_copy(text: str) -> str:
    """COPY text format: backslash, tab, newline and carriage return escaped."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def _row(values: list[Any]) -> str:
    out = []
    for value in values:
        if value is None:
            out.append("\\N")
        else:
            out.append(_escape_copy(str(value)))
    return "\t".join(out) + "\n"


@dataclass
class Counters:
    patient: int = 0
    study: int = 0
    series: int = 0
    instance: int = 0


@dataclass
class Targets:
    """Values the queries use, found while generating the first size."""

    patient_id: str = ""
    study_uid: str = ""
    smi_patients: int = 0


class Generator:
    """Deterministic synthetic archive: patients with 1-6 studies, studies of a modality's usual shape."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.counters = Counters()
        self.targets = Targets()
        self.weights = [p.weight for p in PROFILES]
        self._uid_salt = f"{seed % 1000:03d}"

    def uid(self, kind: int, number: int) -> str:
        # unique per (kind, number); as long as real UIDs (~55-64 characters)
        return f"{UID_ROOT}{kind}.{self._uid_salt}{number:09d}.{20261126}{number * 7919 % 1000003:07d}"

    def _patient(self) -> dict[str, str]:
        rng = self.rng
        number = self.counters.patient
        self.counters.patient += 1
        charset = "ISO_IR 100"
        roll = rng.random()
        if self.targets.smi_patients < SMI_PATIENTS and number % 7 == 3:
            self.targets.smi_patients += 1
            name = f"{rng.choice(SMI_SURNAMES)}^{rng.choice(GIVEN_NAMES[:18])}"
        elif roll < 0.13:
            name = f"{rng.choice(NON_ASCII_SURNAMES)}^{rng.choice(GIVEN_NAMES)}"
            charset = "ISO_IR 192"
        elif roll < 0.16:
            roman, kanji = rng.choice(JAPANESE)
            name = f"{roman}^TARO={kanji}^太郎"
            charset = "ISO_IR 192"
        else:
            given = rng.choice(GIVEN_NAMES[:21])
            name = f"{rng.choice(SURNAMES)}^{given}" + (f"^{rng.choice('ABCDEFGHJKLM')}" if rng.random() < 0.3 else "")
        if not name.isascii():
            charset = "ISO_IR 192"
        birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(90 * 365))
        return {
            "PatientID": f"{10_000_000 + number * 7919 % 89_999_989:08d}",
            "PatientName": name,
            "PatientBirthDate": birth.strftime("%Y%m%d"),
            "PatientSex": rng.choice("MMFFFO" if rng.random() < 0.02 else "MF"),
            "charset": charset,
            "pk": str(number + 1),
        }

    def _study_dataset(self, patient: dict[str, str], profile: Profile, study_number: int, date: dt.date) -> Any:
        from pydicom.dataset import Dataset, FileMetaDataset

        rng = self.rng
        ds = Dataset()
        ds.SpecificCharacterSet = patient["charset"]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = profile.sop_class
        ds.SOPInstanceUID = "1.2.3.4"  # patched per instance
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date.strftime("%Y%m%d")
        time_of_day = f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time_of_day
        ds.AccessionNumber = f"A{date.year}{study_number:07d}"
        ds.Modality = profile.modality
        ds.Manufacturer = rng.choice(["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "CANON_MEC"])
        ds.InstitutionName = rng.choice(INSTITUTIONS)
        ds.ReferringPhysicianName = rng.choice(REFERRERS)
        ds.StationName = f"{profile.modality}0{rng.randrange(1, 4)}"
        ds.StudyDescription = rng.choice(profile.descriptions)
        ds.SeriesDescription = profile.series_descriptions[0]
        ds.ManufacturerModelName = "MODEL-" + profile.modality
        ds.PatientName = patient["PatientName"]
        ds.PatientID = patient["PatientID"]
        ds.PatientBirthDate = patient["PatientBirthDate"]
        ds.PatientSex = patient["PatientSex"]
        ds.PatientAge = f"{max(0, date.year - int(patient['PatientBirthDate'][:4])):03d}Y"
        ds.BodyPartExamined = rng.choice(profile.body_parts)
        ds.SoftwareVersions = "VA10"
        ds.ProtocolName = ds.StudyDescription
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = self.uid(1, study_number)
        ds.SeriesInstanceUID = "1.2.3.5"  # patched per series
        ds.StudyID = str(study_number % 100000)
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = 1
        if profile.modality in ("CT", "MR", "PT"):
            ds.SliceThickness = "5.0"
            ds.KVP = "120"
            ds.ImagePositionPatient = ["-180.0", "-180.0", "-5.0"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.FrameOfReferenceUID = self.uid(4, study_number)
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = "-5.0"
            ds.PixelSpacing = ["0.7031", "0.7031"]
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = profile.rows
        ds.Columns = profile.rows
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = profile.sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
        ds.file_meta.TransferSyntaxUID = TS_EXPLICIT
        return ds

    def generate(self, instances: int, writers: "Writers", progress_every: int = 50_000) -> None:
        """Add about ``instances`` instances (whole studies; the last one is cut to hit the count exactly)."""
        import pydicom

        from services.indexer.extract import extract

        rng = self.rng
        target = self.counters.instance + instances
        next_progress = self.counters.instance + progress_every
        started = time.perf_counter()
        now = "2026-11-26 06:00:00+00"
        while self.counters.instance < target:
            patient = self._patient()
            writers.patient_pending = patient
            for _ in range(min(6, 1 + int(rng.expovariate(0.8)))):
                if self.counters.instance >= target:
                    break
                profile = rng.choices(PROFILES, self.weights)[0]
                study_number = self.counters.study
                self.counters.study += 1
                date = DATE_FIRST + dt.timedelta(days=rng.randrange(DATE_DAYS + 1))
                dataset = self._study_dataset(patient, profile, study_number, date)
                buffer = BytesIO()
                pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
                record = extract(buffer.getvalue())  # exactly what the indexer derives from such an object
                writers.patient(record, patient, now)
                study_pk = study_number + 1
                writers.study(record, study_pk, int(patient["pk"]), now)
                if not self.targets.study_uid and profile.modality == "CT" and self.counters.patient > 20:
                    self.targets.study_uid = record.study_instance_uid
                if not self.targets.patient_id and self.counters.patient > 30 and not patient["PatientName"].startswith("SMI"):
                    self.targets.patient_id = patient["PatientID"]
                for series_index in range(rng.randint(*profile.series)):
                    if self.counters.instance >= target:
                        break
                    series_number = self.counters.series
                    self.counters.series += 1
                    attributes = dict(record.attributes)
                    modality = "CT" if profile.modality == "PT" and series_index == 0 else profile.modality
                    description = profile.series_descriptions[series_index % len(profile.series_descriptions)]
                    series_uid = self.uid(2, series_number)
                    attributes["0020000E"] = {"vr": "UI", "Value": [series_uid]}
                    attributes["00200011"] = {"vr": "IS", "Value": [series_index + 1]}
                    attributes["0008103E"] = {"vr": "LO", "Value": [description]}
                    attributes["00080060"] = {"vr": "CS", "Value": [modality]}
                    attributes["00080018"] = {"vr": "UI", "Value": ["@SOP@"]}
                    attributes["00200013"] = {"vr": "IS", "Value": ["@INO@"]}
                    if "00201041" in attributes:
                        attributes["00201041"] = {"vr": "DS", "Value": ["@Z@"]}
                        attributes["00200032"] = {"vr": "DS", "Value": [-180.0, -180.0, "@Z@"]}
                    template = _escape_copy(json.dumps(attributes, ensure_ascii=False))
                    series_pk = series_number + 1
                    writers.series(series_pk, series_uid, study_pk, modality, series_index + 1, description,
                                   record.body_part_examined, now)
                    count = min(rng.randint(*profile.per_series), target - self.counters.instance)
                    size = profile.rows * profile.rows * 2 // (3 if profile.syntax == TS_JPEG_LS else 1) + 2400
                    object_prefix = f"{record.study_instance_uid}/{series_uid}/"
                    received = f"{date.isoformat()} {dataset.StudyTime[:2]}:{dataset.StudyTime[2:4]}:00+00"
                    for number in range(1, count + 1):
                        instance_number = self.counters.instance
                        self.counters.instance += 1
                        sop_uid = self.uid(3, instance_number)
                        z = f"{-5.0 * number:.1f}"
                        document = (template.replace('"@SOP@"', f'"{sop_uid}"').replace('"@INO@"', str(number))
                                    .replace('"@Z@"', z))
                        writers.instance(
                            instance_number + 1, sop_uid, profile.sop_class, series_pk, int(patient["pk"]), number,
                            profile.syntax, object_prefix + sop_uid + ".dcm", size + rng.randrange(64),
                            hashlib.sha256(sop_uid.encode()).hexdigest(), received, now,
                            record.specific_character_set, document)
                    if self.counters.instance >= next_progress:
                        rate = (self.counters.instance - (target - instances)) / (time.perf_counter() - started)
                        log(f"[load] {self.counters.instance:,} instances, {self.counters.study:,} studies, "
                            f"{self.counters.patient:,} patients ({rate:,.0f} instances/s)")
                        next_progress += progress_every


class Writers:
    """COPY streams for the four tables; rows are buffered and written in blocks."""

    PATIENT_COLUMNS = ("pk", "patient_key", "patient_id", "patient_name", "patient_name_folded",
                       "patient_name_search", "patient_birth_date", "patient_sex", "created_at")
    STUDY_COLUMNS = ("pk", "study_instance_uid", "patient_fk", "study_date", "study_time", "accession_number",
                     "study_id", "study_description", "referring_physician_name", "created_at", "last_update")
    SERIES_COLUMNS = ("pk", "series_instance_uid", "study_fk", "modality", "series_number", "series_description",
                      "body_part_examined", "created_at", "last_update")
    INSTANCE_COLUMNS = ("pk", "sop_instance_uid", "sop_class_uid", "series_fk", "patient_fk", "instance_number",
                        "transfer_syntax", "object_key", "size", "sha256", "remote_aet", "called_aet", "remote_ip",
                        "received_at", "indexed_at", "specific_character_set", "attributes")
    BLOCK = 8 << 20

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.buffers: dict[str, list[str]] = {"patients": [], "studies": [], "series": [], "instances": []}
        self.sizes = dict.fromkeys(self.buffers, 0)
        self.patient_pending: dict[str, str] | None = None
        self._patients_written: set[str] = set()

    def _add(self, table: str, line: str) -> None:
        self.buffers[table].append(line)
        self.sizes[table] += len(line)
        if self.sizes[table] >= self.BLOCK:
            self.flush_all()  # parents first, so foreign keys always find their rows

    def patient(self, record: Any, patient: dict[str, str], now: str) -> None:
        if patient["pk"] in self._patients_written:
            return
        self._patients_written.add(patient["pk"])
        self._add("patients", _row([patient["pk"], record.patient_key, record.patient_id, record.patient_name,
                                    record.patient_name_folded, record.patient_name_search,
                                    record.patient_birth_date, record.patient_sex, now]))

    def study(self, record: Any, pk: int, patient_pk: int, now: str) -> None:
        self._add("studies", _row([pk, record.study_instance_uid, patient_pk, record.study_date, record.study_time,
                                   record.accession_number, record.study_id, record.study_description,
                                   record.referring_physician_name, now, now]))

    def series(self, pk: int, uid: str, study_pk: int, modality: str, number: int, description: str,
               body_part: str, now: str) -> None:
        self._add("series", _row([pk, uid, study_pk, modality, number, description, body_part, now, now]))

    def instance(self, pk: int, sop_uid: str, sop_class: str, series_pk: int, patient_pk: int, number: int,
                 syntax: str, key: str, size: int, sha: str, received: str, now: str, charset: str,
                 document: str) -> None:
        # the document is already escaped for COPY
        line = (f"{pk}\t{sop_uid}\t{sop_class}\t{series_pk}\t{patient_pk}\t{number}\t{syntax}\t{key}\t{size}\t"
                f"{sha}\tMODALITY1\tPACS\t10.0.0.17\t{received}\t{now}\t{charset}\t{document}\n")
        self.buffers["instances"].append(line)
        self.sizes["instances"] += len(line)
        if self.sizes["instances"] >= self.BLOCK:
            self.flush_all()

    def flush_all(self) -> None:
        columns = {"patients": self.PATIENT_COLUMNS, "studies": self.STUDY_COLUMNS, "series": self.SERIES_COLUMNS,
                   "instances": self.INSTANCE_COLUMNS}
        with self.connection.cursor() as cursor:
            for table in ("patients", "studies", "series", "instances"):
                if not self.buffers[table]:
                    continue
                with cursor.copy(f"COPY {table} ({', '.join(columns[table])}) FROM STDIN") as copy:
                    copy.write("".join(self.buffers[table]).encode())
                self.buffers[table].clear()
                self.sizes[table] = 0
        self.connection.commit()


def load(dsn: str, generator: Generator, instances: int) -> float:
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(dsn) as connection:
        connection.execute("SET synchronous_commit = off")
        writers = Writers(connection)
        generator.generate(instances, writers)
        writers.flush_all()
        for table in ("patients", "studies", "series", "instances"):
            connection.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), "
                               f"(SELECT max(pk) FROM {table}))")
        connection.commit()
    log(f"[load] COPY done in {time.perf_counter() - started:.0f} s; VACUUM ANALYZE ...")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def table_counts(dsn: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as connection:
        return {table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
                for table in ("patients", "studies", "series", "instances")}


def recent_date_range(dsn: str, studies: int) -> str:
    import psycopg

    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT study_date FROM studies ORDER BY study_date DESC OFFSET %s LIMIT 1",
                                 (studies - 1,)).fetchone()
        last = connection.execute("SELECT max(study_date) FROM studies").fetchone()
    assert row is not None and last is not None
    return f"{row[0]}-{last[0]}"


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------

STUDY_RETURN_KEYS = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                     "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription", "ReferringPhysicianName",
                     "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                     "InstitutionName"]
SERIES_RETURN_KEYS = ["SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
                      "NumberOfSeriesRelatedInstances"]


@dataclass
class QuerySpec:
    name: str
    level: str
    match: dict[str, str]
    study_level: bool = True  # counts toward the study-level target
    matches: int | None = None

    def keys(self) -> dict[str, str]:
        returned = STUDY_RETURN_KEYS if self.level == "STUDY" else SERIES_RETURN_KEYS
        keys = {key: "" for key in returned}
        keys.update(self.match)
        return keys

    def findscu_args(self) -> list[str]:
        args = ["-k", f"QueryRetrieveLevel={self.level}"]
        for key, value in self.keys().items():
            args += ["-k", f"{key}={value}" if value else key]
        return args

    def qido_path(self) -> str:
        if self.level == "SERIES":
            fields = [key for key in SERIES_RETURN_KEYS]
            return (f"/dicomweb/studies/{self.match['StudyInstanceUID']}/series?"
                    + urllib.parse.urlencode([("includefield", key) for key in fields]))
        params = [(key, value) for key, value in self.match.items()]
        params += [("includefield", key) for key in STUDY_RETURN_KEYS]
        return "/dicomweb/studies?" + urllib.parse.urlencode(params)


def query_specs(targets: Targets, date_range: str) -> list[QuerySpec]:
    return [
        QuerySpec("study by PatientID", "STUDY", {"PatientID": targets.patient_id}),
        QuerySpec("study by PatientName SMI*", "STUDY", {"PatientName": "SMI*"}),
        QuerySpec("study by StudyDate range (~20 studies)", "STUDY", {"StudyDate": date_range}),
        QuerySpec("study by StudyDate, one year (grows)", "STUDY", {"StudyDate": "20200101-20201231"},
                  study_level=False),
        QuerySpec("series of one study", "SERIES", {"StudyInstanceUID": targets.study_uid}, study_level=False),
    ]


def findscu_command(spec: QuerySpec, port: int, verbose: bool = False) -> list[str]:
    return (["findscu", "-S"] + (["-v"] if verbose else []) + ["-aet", FIND_AET, "-aec", NODE_AET]
            + spec.findscu_args() + [HOST, str(port)])


def findscu_env() -> dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1")


def count_matches(spec: QuerySpec, port: int) -> int:
    result = subprocess.run(findscu_command(spec, port, verbose=True), capture_output=True, text=True,
                            env=findscu_env(), timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"findscu failed ({result.returncode}): {result.stderr[-2000:]}")
    text = result.stdout + result.stderr
    if "Success" not in text.split("Find Response")[-1]:
        raise RuntimeError(f"findscu: no final Success: {text[-1000:]}")
    return sum(1 for line in text.splitlines() if "Find Response" in line and "Pending" in line)


def timed_process(command: list[str], timeout: float) -> tuple[float, int, bytes]:
    """(ms from spawn to exit, exit code, stderr) of one process.

    subprocess.run(..., timeout=...) waits for the exit by polling with doubling sleeps (0.5, 1, 2, ... 32 ms):
    a process that ends just after 31.5 ms is seen at 63.5 ms (a bare echoscu measured 64 ms that way, 30 ms
    here). So the wait is a blocking waitpid, and a timer kills a process that outlives ``timeout``."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=findscu_env())
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    try:
        assert process.stderr is not None
        stderr = process.stderr.read()
        returncode = process.wait()
    finally:
        killer.cancel()
        if process.stderr is not None:
            process.stderr.close()
    return (time.perf_counter() - started) * 1000, returncode, stderr


def time_findscu(spec: QuerySpec, port: int) -> float:
    """One whole findscu process, in ms."""
    elapsed, returncode, stderr = timed_process(findscu_command(spec, port), 120)
    if returncode != 0:
        raise RuntimeError(f"findscu failed ({returncode}): {stderr.decode()[-1000:]}")
    return elapsed


def time_echoscu(port: int) -> float:
    """One whole echoscu process (the fixed cost of a dcmtk process and an association), in ms."""
    elapsed, returncode, stderr = timed_process(["echoscu", "-aet", FIND_AET, "-aec", NODE_AET, HOST, str(port)], 30)
    if returncode != 0:
        raise RuntimeError(f"echoscu failed ({returncode}): {stderr.decode()[-1000:]}")
    return elapsed


def has_qido(api_port: int) -> bool:
    status, body = http("GET", f"http://{HOST}:{api_port}/openapi.json")
    if status != 200:
        return False
    try:
        return any(path.rstrip("/") == "/dicomweb/studies" for path in json.loads(body).get("paths", {}))
    except ValueError:
        return False


class QidoClient:
    """One keep-alive HTTP connection to the API."""

    def __init__(self, api_port: int) -> None:
        self.connection = httpclient.HTTPConnection(HOST, api_port, timeout=60)

    def time(self, spec: QuerySpec) -> tuple[float, int]:
        """(ms, number of answers) of one QIDO-RS request."""
        started = time.perf_counter()
        self.connection.request("GET", spec.qido_path(), headers={"Accept": "application/dicom+json"})
        response = self.connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status not in (200, 204):
            raise RuntimeError(f"QIDO-RS {spec.name}: HTTP {response.status} {body[:300]!r}")
        return elapsed, (len(json.loads(body)) if body else 0)

    def close(self) -> None:
        self.connection.close()


def explain(dsn_url: str, spec: QuerySpec) -> str:
    """EXPLAIN ANALYZE of every SQL statement shared.query.search runs for this query (in this process)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.orm import Session

    from shared.query.search import Query, run_query

    engine = create_engine(dsn_url)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    keys = spec.keys()
    values = {key: (value or None) for key, value in keys.items()}
    started = time.perf_counter()
    with Session(engine) as session:
        rows = run_query(session, Query(level=spec.level, values=values, requested=list(keys)))
    elapsed = (time.perf_counter() - started) * 1000
    event.remove(engine, "before_cursor_execute", capture)
    out = [f"### {spec.name}: run_query in-process {elapsed:.1f} ms, {len(rows)} rows, "
           f"{len(captured)} statements"]
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        for statement, parameters in captured:
            plan = raw.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).fetchall()
            out.append(statement.strip())
            out.extend("    " + line[0] for line in plan)
    engine.dispose()
    return "\n".join(out)


def in_process_times(dsn_url: str, spec: QuerySpec, runs: int) -> list[float]:
    """run_query alone (SQL plus Python, no DICOM): the server's share of a C-FIND."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from shared.query.search import Query, run_query

    engine = create_engine(dsn_url)
    keys = spec.keys()
    values = {key: (value or None) for key, value in keys.items()}
    times = []
    try:
        for index in range(runs + 3):
            started = time.perf_counter()
            with Session(engine) as session:
                run_query(session, Query(level=spec.level, values=values, requested=list(keys)))
            if index >= 3:
                times.append((time.perf_counter() - started) * 1000)
    finally:
        engine.dispose()
    return times


# --------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------

@dataclass
class Node:
    database_url: str
    workdir: Path
    dicom_port: int = 0
    api_port: int = 0
    processes: list[Process] = field(default_factory=list)

    def start(self) -> None:
        self.dicom_port, self.api_port = free_port(), free_port()
        env = pacs_env(PACS_DATABASE_URL=self.database_url, PACS_DICOM_HOST=HOST, PACS_API_HOST=HOST,
                       PACS_DATA_DIR=str(self.workdir / "data"), PACS_AE_TITLE=NODE_AET, PACS_LOG_LEVEL="WARNING",
                       PACS_DICOM_PORT=str(self.dicom_port), PACS_API_PORT=str(self.api_port))
        api = Process("pacs api", pacs_command("api"), self.workdir / "api.log", env, cwd=pacs_cwd())
        self.processes.append(api)
        scp = Process("pacs scp", pacs_command("scp"), self.workdir / "scp.log", env, cwd=pacs_cwd())
        self.processes.append(scp)
        api.wait_ready(lambda: http("GET", f"http://{HOST}:{self.api_port}/healthz", timeout=2)[0] == 200)
        scp.wait_ready(lambda: tcp_accepts(self.dicom_port))
        status, body = http("PUT", f"http://{HOST}:{self.api_port}/api/modalities/bench-find",
                            {"ae_title": FIND_AET, "host": HOST, "port": 104, "allow": ["find"],
                             "description": "bench/query.py"})
        if status not in (200, 201):
            raise RuntimeError(f"PUT /api/modalities/bench-find answered {status}: {body[:300]!r}")
        time.sleep(1.0)  # the SCP polls the registry every 0.5 s

    @property
    def scp_pid(self) -> int:
        return self.processes[1].pid

    def stop(self) -> None:
        for process in reversed(self.processes):
            rc = process.stop()
            if rc not in (0, None):
                log(f"[{process.name}] exit code {rc}")
        self.processes.clear()


def psql_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(sql)


def migrate(database_url: str) -> None:
    subprocess.run(pacs_command("migrate"), env=pacs_env(PACS_DATABASE_URL=database_url), check=True,
                   stdout=subprocess.DEVNULL, cwd=pacs_cwd())


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

@dataclass
class Measured:
    size: int
    query: str
    matches: int
    findscu: list[float]
    qido: list[float] | None = None
    qido_answers: int | None = None
    server: list[float] | None = None


def table(results: list[Measured], sizes: list[int], echo: dict[int, list[float]], qido: bool) -> str:
    names = list(dict.fromkeys(r.query for r in results))
    by = {(r.size, r.query): r for r in results}
    head = "| query | " + " | ".join(f"{s:,} instances: matches · median · p95" for s in sizes)
    head += " | growth (median) |" if len(sizes) > 1 else " |"
    lines = [head, "|---|" + "---|" * (len(sizes) + (1 if len(sizes) > 1 else 0))]
    lines.append("| (bare `echoscu` process) | " + " | ".join(
        f"– · {median(echo[s]):.1f} ms · {percentile(echo[s], 0.95):.1f} ms" for s in sizes)
        + (" | |" if len(sizes) > 1 else " |"))
    for name in names:
        cells = []
        for size in sizes:
            r = by.get((size, name))
            cells.append(f"{r.matches} · {median(r.findscu):.1f} ms · {percentile(r.findscu, 0.95):.1f} ms"
                         if r else "–")
        growth = ""
        if len(sizes) > 1 and (sizes[0], name) in by and (sizes[-1], name) in by:
            growth = f"{median(by[(sizes[-1], name)].findscu) / median(by[(sizes[0], name)].findscu):.2f}×"
        lines.append(f"| C-FIND {name} | " + " | ".join(cells) + (f" | {growth} |" if len(sizes) > 1 else " |"))
    server_lines = ["", "Server share: `shared.query.search.run_query` in-process (SQL + Python, no DICOM), "
                    "median ms:", "", "| query | " + " | ".join(f"{s:,}" for s in sizes) + " |",
                    "|---|" + "---|" * len(sizes)]
    for name in names:
        cells = [f"{median(by[(s, name)].server or [0]):.1f} ms" if (s, name) in by and by[(s, name)].server
                 else "–" for s in sizes]
        server_lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += server_lines
    if qido:
        lines += ["", "QIDO-RS (one keep-alive HTTP connection; answers · median · p95):", "",
                  "| query | " + " | ".join(f"{s:,}" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for name in names:
            cells = []
            for size in sizes:
                r = by.get((size, name))
                cells.append(f"{r.qido_answers} · {median(r.qido):.1f} ms · {percentile(r.qido, 0.95):.1f} ms"
                             if r and r.qido else "–")
            lines.append(f"| QIDO-RS {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000",
                        help="instance counts to measure, one database each (default 100000,1000000)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per query and size (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds before (default 5)")
    parser.add_argument("--seed", type=int, default=20261126, help="random seed of the synthetic archive")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN (ANALYZE, BUFFERS) of every statement each query runs")
    parser.add_argument("--no-qido", action="store_true", help="do not measure QIDO-RS even if the route exists")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the databases at the end")
    parser.add_argument("--db-prefix", default=f"pacs_bench_q{os.getpid()}_",
                        help="database name prefix, must start with pacs_bench_ (default pacs_bench_q<pid>_); "
                             "the size is appended")
    parser.add_argument("--reuse-db", action="store_true",
                        help="use databases kept by an earlier --keep-db run with the same --db-prefix and sizes")
    parser.add_argument("--out", help="write the raw timings as JSON to this file")
    add_source_argument(parser)
    args = parser.parse_args(argv)
    source = configure_source(args.commit)

    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if sizes != sorted(sizes) or not sizes:
        parser.error("--sizes must be ascending")
    if not args.db_prefix.startswith("pacs_bench_"):
        parser.error("--db-prefix must start with pacs_bench_")
    for tool in ("findscu", "echoscu"):
        if not shutil.which(tool):
            parser.error(f"{tool} (dcmtk) not found on PATH")
    if not PACS.exists():
        parser.error(f"{PACS} not found: run `make install`")

    names = {size: f"{args.db_prefix}{size}" for size in sizes}
    urls = {size: f"postgresql+psycopg://postgres@127.0.0.1:5432/{names[size]}" for size in sizes}
    dsns = {size: f"host=127.0.0.1 port=5432 user=postgres dbname={names[size]}" for size in sizes}
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bench-query-"))
    created: list[str] = []
    nodes: dict[int, Node] = {}
    results: dict[tuple[int, str], Measured] = {}
    echo: dict[int, list[float]] = {size: [] for size in sizes}
    qido_available = False
    targets = Targets()
    try:
        # 1. one database per size, loaded with the same seed (the bigger one starts with the smaller one's rows)
        for size in sizes:
            if args.reuse_db:
                migrate(urls[size])  # the schema of the pacs under test (new indexes included)
                with __import__("psycopg").connect(dsns[size], autocommit=True) as connection:
                    connection.execute("VACUUM ANALYZE")
                counts = table_counts(dsns[size])
                _targets_from_db(dsns[size], targets)
                log(f"[db] reusing {names[size]}: {counts}")
                continue
            psql_admin(f'CREATE DATABASE "{names[size]}"')
            created.append(names[size])
            migrate(urls[size])
            log(f"[db] {names[size]} created and migrated; loading {size:,} instances")
            generator = Generator(args.seed)
            seconds = load(dsns[size], generator, size)
            targets = generator.targets
            log(f"[load] {table_counts(dsns[size])} in {seconds:.0f} s")
        specs = {size: query_specs(targets, recent_date_range(dsns[size], 20)) for size in sizes}
        # 2. one node (pacs scp + pacs api) per database, all running during the measurement
        for size in sizes:
            (workdir / str(size)).mkdir()
            nodes[size] = Node(urls[size], workdir / str(size))
            nodes[size].start()
        qido_available = not args.no_qido and has_qido(nodes[sizes[0]].api_port)
        for size in sizes:
            for spec in specs[size]:
                results[(size, spec.name)] = Measured(size, spec.name, count_matches(spec, nodes[size].dicom_port),
                                                      [])
        # 3. interleaved: every round runs every query once against every size, so a drift of this shared
        #    machine's load hits all of them alike
        log(f"[find] {args.warmup} warm-up + {args.runs} rounds of {len(specs[sizes[0]])} queries x {len(sizes)} "
            "sizes (findscu)")
        for round_number in range(args.warmup + args.runs):
            timed = round_number >= args.warmup
            for size in sizes:
                elapsed = time_echoscu(nodes[size].dicom_port)
                if timed:
                    echo[size].append(elapsed)
            for index in range(len(specs[sizes[0]])):
                for size in sizes:
                    elapsed = time_findscu(specs[size][index], nodes[size].dicom_port)
                    if timed:
                        results[(size, specs[size][index].name)].findscu.append(elapsed)
            if timed and (round_number - args.warmup + 1) % 10 == 0:
                log(f"[find] {round_number - args.warmup + 1}/{args.runs} rounds")
        if qido_available:
            log("[qido] interleaved rounds over one keep-alive connection per node")
            clients = {size: QidoClient(nodes[size].api_port) for size in sizes}
            try:
                for round_number in range(args.warmup + args.runs):
                    for index in range(len(specs[sizes[0]])):
                        for size in sizes:
                            spec = specs[size][index]
                            elapsed, answers = clients[size].time(spec)
                            measured = results[(size, spec.name)]
                            measured.qido_answers = answers
                            if round_number >= args.warmup:
                                measured.qido = (measured.qido or []) + [elapsed]
            finally:
                for client in clients.values():
                    client.close()
        log("[server] run_query in-process")
        for size in sizes:
            for spec in specs[size]:
                results[(size, spec.name)].server = in_process_times(urls[size], spec, min(args.runs, 20))
                if args.explain:
                    print(f"\n## {size:,} instances", flush=True)
                    print(explain(urls[size], spec), flush=True)
    finally:
        for node in nodes.values():
            node.stop()
        for name in created:
            if args.keep_db:
                log(f"[db] kept {name} (drop it: psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE {name}')")
                continue
            try:
                psql_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                log(f"[db] {name} dropped")
            except Exception as exc:  # noqa: BLE001 - report, do not hide the original error
                log(f"[db] could not drop {name}: {exc}")
        shutil.rmtree(workdir, ignore_errors=True)
    ordered = [results[key] for key in results if results[key].findscu]
    if not ordered:
        return 1
    print(f"\nC-FIND latency, whole findscu process (TCP_NODELAY=1), median and p95 of {args.runs} interleaved runs "
          f"after {args.warmup} warm-up rounds; {machine()}; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"pacs from {source}\n")
    print(table(ordered, sizes, echo, qido_available))
    if not qido_available:
        print("\nQIDO-RS: no /dicomweb/studies route in this build of the API (or --no-qido); not measured.")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "sizes": sizes, "runs": args.runs, "machine": machine(),
            "echo_ms": {str(k): v for k, v in echo.items()},
            "results": [r.__dict__ for r in ordered]}, indent=1))
    return 0


def _targets_from_db(dsn: str, targets: Targets) -> None:
    import psycopg

    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT p.patient_id FROM patients p WHERE p.pk > 30 AND "
                                 "p.patient_name NOT LIKE 'SMI%%' ORDER BY p.pk LIMIT 1").fetchone()
        targets.patient_id = row[0] if row else ""
        row = connection.execute("SELECT st.study_instance_uid FROM studies st JOIN series se ON se.study_fk = st.pk "
                                 "WHERE se.modality = 'CT' AND st.patient_fk > 20 ORDER BY st.pk LIMIT 1").fetchone()
        targets.study_uid = row[0] if row else ""


if __name__ == "__main__":
    sys.exit(main())
