"""``cleftscore serve`` with a real PACS: Orthanc sends the photo and receives the results.

Orthanc runs in the foreground with a configuration written here (no plugins, REST on
loopback only); the test talks to its REST API with urllib. The photo is uploaded to
Orthanc, Orthanc C-STOREs it to the service (modality "cleftscore"), and the service
C-STOREs its Secondary Capture and PDF back to Orthanc, into the photo's study.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.service.harness import (
    DEMO_LABEL,
    ENCAPSULATED_PDF_STORAGE,
    SC_STORAGE,
    SERVICE_AE,
    ServiceProcess,
    demo_bundle,
    free_port,
    img2dcm,
    prepare_data_dir,
    service_env,
    stop_process,
    wait_until,
)

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ORTHANC_BINARY.is_file() or shutil.which("img2dcm") is None,
                       reason=f"needs {ORTHANC_BINARY} and img2dcm"),
]

PATIENT_ID = "ORTHANC-0001"


class Orthanc:
    """Orthanc in the foreground with its own configuration in ``folder``; REST by urllib."""

    def __init__(self, folder: Path, service_port: int, binary: Path = ORTHANC_BINARY) -> None:
        self.folder = folder
        self.binary = binary
        self.dicom_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.dicom_port:
            self.http_port = free_port()
        self.service_port = service_port
        self.process: subprocess.Popen | None = None
        self.log_path = folder / "orthanc.log"

    @property
    def destination(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.dicom_port}"

    def configuration(self) -> dict[str, Any]:
        return {
            "Name": "cleftscore-e2e",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,  # accept our results (the default, stated)
            "DicomAlwaysAllowEcho": True,
            "UnknownSopClassAccepted": False,
            "DicomModalities": {"cleftscore": [SERVICE_AE, "127.0.0.1", self.service_port]},
            "Plugins": [],
            "LuaScripts": [],
            "SaveJobs": False,
            "StorageCompression": False,
            "DicomScuTimeout": 30,
        }

    def start(self, timeout: float = 60) -> Orthanc:
        for sub in ("storage", "index"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.configuration(), indent=2), encoding="utf-8")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(self.binary), str(config)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"Orthanc exited {self.process.returncode}\n{self.describe()}")
            try:
                return self.get("/system").get("DicomAet") == "ORTHANC"
            except (OSError, urllib.error.URLError):
                return False

        wait_until(up, timeout, f"Orthanc's HTTP port {self.http_port}", self.describe)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 15)

    def describe(self, tail_lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no Orthanc log)"
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "----- orthanc.log -----\n" + "\n".join(lines[-tail_lines:])

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/octet-stream", timeout: float = 60) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload.strip() else None

    def get(self, path: str) -> Any:
        return self.request("GET", path, timeout=10)

    def post(self, path: str, body: bytes, content_type: str = "application/octet-stream") -> Any:
        return self.request("POST", path, body, content_type)


@pytest.fixture(scope="module")
def peers(tmp_path_factory) -> Iterator[tuple[Orthanc, ServiceProcess]]:
    root = tmp_path_factory.mktemp("orthanc")
    bundle = demo_bundle(tmp_path_factory.getbasetemp())
    service_port = free_port()
    orthanc = Orthanc(root / "orthanc", service_port)
    env = service_env(prepare_data_dir(root / "data", bundle), service_port, [orthanc.destination])
    service = ServiceProcess(env, root / "logs")
    with contextlib.ExitStack() as stack:
        stack.callback(orthanc.stop)
        stack.callback(service.stop)
        orthanc.start()
        service.start()
        yield orthanc, service


def _series_in_study(orthanc: Orthanc, study_id: str) -> list[dict]:
    """Each series of the study with its instances' SOP Class UIDs."""
    found = []
    for series in orthanc.get(f"/studies/{study_id}/series"):
        classes = [orthanc.get(f"/instances/{i['ID']}/simplified-tags").get("SOPClassUID")
                   for i in orthanc.get(f"/series/{series['ID']}/instances")]
        found.append({"uid": series["MainDicomTags"]["SeriesInstanceUID"],
                      "modality": series["MainDicomTags"].get("Modality"),
                      "description": series["MainDicomTags"].get("SeriesDescription", ""), "classes": classes})
    return found


def test_orthanc_sends_photo_and_receives_results(tmp_path, peers, faces_dir: Path):
    orthanc, service = peers
    photo = img2dcm(faces_dir / "obama.jpg", tmp_path / "obama.dcm", PatientID=PATIENT_ID,
                    StudyDescription="Orthanc e2e", StudyDate="20240310")
    header = pydicom.dcmread(photo, stop_before_pixels=True)
    study_uid = str(header.StudyInstanceUID)

    uploaded = orthanc.post("/instances", photo.read_bytes(), "application/dicom")
    assert uploaded["Status"] == "Success", uploaded
    [match] = orthanc.post("/tools/lookup", study_uid.encode(), "text/plain")
    assert match["Type"] == "Study", match
    study_id = match["ID"]
    assert len(orthanc.get(f"/studies/{study_id}/series")) == 1

    store = orthanc.post("/modalities/cleftscore/store", json.dumps([uploaded["ID"]]).encode(), "application/json")
    assert store.get("FailedInstancesCount", 0) == 0 and store.get("InstancesCount") == 1, store
    service.wait_for_log("photo recorded", sop_uid=str(header.SOPInstanceUID), timeout=30)

    def results_arrived() -> list[dict] | None:
        series = _series_in_study(orthanc, study_id)
        return series if len(series) >= 3 else None

    series = wait_until(results_arrived, 120, "the SC and DOC series in Orthanc",
                        lambda: f"{service.describe()}\n{orthanc.describe()}")
    context = f"{series}\n{service.describe()}"
    by_class = {tuple(s["classes"]): s for s in series}
    assert set(by_class) == {(str(header.SOPClassUID),), (SC_STORAGE,), (ENCAPSULATED_PDF_STORAGE,)}, context
    sc, doc = by_class[(SC_STORAGE,)], by_class[(ENCAPSULATED_PDF_STORAGE,)]
    assert doc["modality"] == "DOC", context
    assert len({s["uid"] for s in series}) == 3, context
    assert DEMO_LABEL in sc["description"] and DEMO_LABEL in doc["description"], context
    # All three in the same study (Orthanc files by Study Instance UID), of the same patient.
    assert orthanc.post("/tools/lookup", study_uid.encode(), "text/plain") == [match]
    assert orthanc.get(f"/studies/{study_id}/patient")["MainDicomTags"]["PatientID"] == PATIENT_ID
    for s in (sc, doc):
        [instance] = orthanc.get(f"/series/{_series_id(orthanc, study_id, s['uid'])}/instances")
        tags = orthanc.get(f"/instances/{instance['ID']}/simplified-tags")
        assert tags["StudyInstanceUID"] == study_uid
        assert tags["PatientID"] == PATIENT_ID
    # Delivered at the first attempt, and the service did not take its own results for photos.
    # Orthanc can list the second object before the sender has logged its C-STORE response.
    wait_until(lambda: len(service.matching("result delivered")) == 2, 30, "two 'result delivered' lines",
               service.describe)
    assert len(service.matching("photo recorded")) == 1, context


def _series_id(orthanc: Orthanc, study_id: str, series_uid: str) -> str:
    [found] = [s["ID"] for s in orthanc.get(f"/studies/{study_id}/series")
               if s["MainDicomTags"]["SeriesInstanceUID"] == series_uid]
    return found
