"""``cleftscore serve`` end to end with dcmtk peers: img2dcm → storescu → service → storescp.

The service runs as a real subprocess (demo bundle, 64-pixel generator, few steps);
the photo and the results travel over real DICOM associations. The same checks run
against PostgreSQL when $CLEFTSCORE_TEST_POSTGRES_URL names a reachable server.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.service.harness import (
    DCMTK_TOOLS,
    DEMO_LABEL,
    ENCAPSULATED_PDF_STORAGE,
    SC_STORAGE,
    ServiceProcess,
    StoreSCP,
    dciodvfy_errors,
    demo_bundle,
    free_port,
    img2dcm,
    pdf_text,
    read_full,
    running_service,
    storescu,
    wait_for_results,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(t) is None for t in DCMTK_TOOLS), reason=f"needs {', '.join(DCMTK_TOOLS)}"),
]

PATIENT_ID = "E2E-0001"
STUDY_DESCRIPTION = "Cleft lip follow-up E2E"
STUDY_DATE = "20240305"
_NUMBER = re.compile(r"[−-]?\d+\.\d+")
POSTGRES_ENV = "CLEFTSCORE_TEST_POSTGRES_URL"


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the server named by $CLEFTSCORE_TEST_POSTGRES_URL, dropped on exit.

    Skips the test (saying why) when the variable is unset or the server is unreachable.
    """
    import psycopg2
    import sqlalchemy as sa

    text = os.environ.get(POSTGRES_ENV)
    if not text:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    base = sa.make_url(text)
    admin_params = {"host": base.host or "127.0.0.1", "port": base.port or 5432, "user": base.username,
                    "password": base.password, "dbname": "postgres", "connect_timeout": 3}
    admin_params = {k: v for k, v in admin_params.items() if v is not None}
    try:
        admin = psycopg2.connect(**admin_params)
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL at {base.render_as_string(hide_password=True)} is unreachable: "
                    f"{str(error).strip().splitlines()[0]}")
    name = f"cleftscore_e2e_{uuid.uuid4().hex[:12]}"
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return demo_bundle(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def photo(tmp_path_factory, faces_dir: Path) -> Path:
    return img2dcm(faces_dir / "obama.jpg", tmp_path_factory.mktemp("photo") / "obama.dcm",
                   PatientID=PATIENT_ID, PatientName="Test^Obama", StudyDescription=STUDY_DESCRIPTION,
                   StudyDate=STUDY_DATE, StudyTime="101500", AccessionNumber="ACC-E2E")


def run_end_to_end(service: ServiceProcess, scp: StoreSCP, photo: Path, scratch: Path) -> None:
    """Send ``photo`` and check the SC and the PDF that reach ``scp``."""
    source = pydicom.dcmread(photo, stop_before_pixels=True)
    sent = storescu(service.port, photo)
    assert sent.returncode == 0, f"storescu failed:\n{sent.stdout}\n{sent.stderr}\n{service.describe()}"

    received = wait_for_results(service, scp, str(source.StudyInstanceUID), count=2)
    context = service.describe()
    assert sorted(item.sop_class_uid for item in received) == sorted([SC_STORAGE, ENCAPSULATED_PDF_STORAGE]), context
    sc = read_full(next(i for i in received if i.sop_class_uid == SC_STORAGE))
    doc = read_full(next(i for i in received if i.sop_class_uid == ENCAPSULATED_PDF_STORAGE))

    # Same study and patient; each result in a new series of its own, with new instance UIDs.
    series = {str(source.SeriesInstanceUID), str(sc.SeriesInstanceUID), str(doc.SeriesInstanceUID)}
    assert len(series) == 3, context
    for result in (sc, doc):
        assert result.StudyInstanceUID == source.StudyInstanceUID
        assert result.PatientID == PATIENT_ID
        assert result.StudyDescription == STUDY_DESCRIPTION
        assert result.StudyDate == STUDY_DATE
        assert result.SOPInstanceUID != source.SOPInstanceUID
    # References to the source photo.
    assert [str(i.ReferencedSOPInstanceUID) for i in sc.SourceImageSequence] == [str(source.SOPInstanceUID)]
    assert [str(i.ReferencedSOPInstanceUID) for i in doc.SourceInstanceSequence] == [str(source.SOPInstanceUID)]
    # Non-clinical (demo) model: labelled as such.
    assert DEMO_LABEL in str(sc.SeriesDescription), sc.SeriesDescription
    assert DEMO_LABEL in str(doc.DocumentTitle), doc.DocumentTitle
    assert sc.BurnedInAnnotation == "YES"
    assert doc.MIMETypeOfEncapsulatedDocument == "application/pdf"

    for item in received:
        assert dciodvfy_errors(item.path) == [], f"dciodvfy errors in {item.path.name}"

    # The PDF names the patient and shows the score the worker logged.
    text = pdf_text(doc, scratch)
    assert PATIENT_ID in text, text[:2000]
    [succeeded] = service.matching("job succeeded")
    logged = float(succeeded["score"])
    assert "Score S" in text, text[:2000]
    numbers = [float(n.replace("−", "-")) for n in _NUMBER.findall(text)]
    assert any(abs(n - logged) <= 0.006 for n in numbers), (logged, numbers[:40])
    # The database the service was given holds the photo, its scored appraisal and both results.
    with service.repository() as repository:
        stored = repository.find_photo(str(source.SOPInstanceUID))
        assert stored is not None, f"photo not in {service.database_url}"
        [appraisal] = repository.appraisals_for_photo(stored.id)
        assert appraisal.status.value == "succeeded" and appraisal.non_clinical
        assert abs(appraisal.primary_score - logged) < 1e-4
        assert {r.sop_instance_uid for r in repository.result_objects_for(appraisal.id)} == {
            str(sc.SOPInstanceUID), str(doc.SOPInstanceUID)}
    # The service answered with the photo recorded once and delivered both results once.
    assert len(service.matching("photo recorded", duplicate=False)) == 1, context
    assert len(service.matching("result delivered")) == 2, context


@pytest.fixture(scope="module")
def destination(tmp_path_factory) -> Iterator[StoreSCP]:
    scp = StoreSCP("DEST", free_port(), tmp_path_factory.mktemp("dest") / "received").start()
    yield scp
    scp.stop()


def test_photo_to_dcmtk_destination_sqlite(tmp_path, bundle, photo, destination):
    with running_service(tmp_path, bundle, [destination.destination]) as service:
        run_end_to_end(service, destination, photo, tmp_path / "pdf")


@pytest.mark.postgres
def test_photo_to_dcmtk_destination_postgres(tmp_path, bundle, faces_dir, destination):
    with fresh_postgres_database() as url:
        # A fresh photo (new study UID) so the shared destination folder holds only this run's results.
        photo = img2dcm(faces_dir / "obama.jpg", tmp_path / "obama-pg.dcm", PatientID=PATIENT_ID,
                        PatientName="Test^Obama", StudyDescription=STUDY_DESCRIPTION, StudyDate=STUDY_DATE)
        with running_service(tmp_path, bundle, [destination.destination], database_url=url) as service:
            run_end_to_end(service, destination, photo, tmp_path / "pdf")
