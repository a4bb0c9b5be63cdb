"""Nothing acknowledged is lost: ``cleftscore serve`` killed with SIGKILL and restarted, and a
destination that is down, end to end with dcmtk peers.

One data folder and one ``storescp`` (new file per received object, so duplicates
would show) serve the module; each test (re)starts the service as it needs. Each
photo has its own study, so results are told apart by Study Instance UID.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from tests.service.harness import (
    DCMTK_TOOLS,
    ENCAPSULATED_PDF_STORAGE,
    SC_STORAGE,
    ServiceProcess,
    StoreSCP,
    demo_bundle,
    free_port,
    img2dcm,
    port_accepts,
    prepare_data_dir,
    service_env,
    storescu,
    wait_for_results,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(t) is None for t in DCMTK_TOOLS), reason=f"needs {', '.join(DCMTK_TOOLS)}"),
]

LEASE_S = 3
#: A job long enough (several seconds on 2 cores) to be killed in the middle of.
SLOW_STEPS = "60"
FAST_STEPS = "5"


@dataclass
class Rig:
    service: ServiceProcess
    scp: StoreSCP
    root: Path
    faces: Path

    def ensure_running(self, inversion_steps: str) -> ServiceProcess:
        """The service, (re)started when it is down or runs with other inversion steps."""
        running = self.service.process is not None and self.service.process.poll() is None
        if running and self.service.env["CLEFTSCORE_INVERSION_STEPS"] == inversion_steps:
            return self.service
        self.service.stop()
        return self.service.start(CLEFTSCORE_INVERSION_STEPS=inversion_steps)

    def photo(self, name: str, patient_id: str) -> tuple[Path, pydicom.Dataset]:
        path = img2dcm(self.faces / "obama.jpg", self.root / f"{name}.dcm", PatientID=patient_id,
                       StudyDescription=f"durability {name}", StudyDate="20240115")
        return path, pydicom.dcmread(path, stop_before_pixels=True)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, faces_dir: Path) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("durability")
    bundle = demo_bundle(tmp_path_factory.getbasetemp())
    scp = StoreSCP("DEST", free_port(), root / "received")
    data_dir = prepare_data_dir(root / "data", bundle)
    env = service_env(data_dir, free_port(), [scp.destination], job_lease_s=LEASE_S)
    service = ServiceProcess(env, root / "logs")
    with contextlib.ExitStack() as stack:
        stack.callback(scp.stop)
        stack.callback(service.stop)
        yield Rig(service, scp, root, faces_dir)


def _send(service: ServiceProcess, path: Path) -> None:
    sent = storescu(service.port, path)
    assert sent.returncode == 0 and "Received Store Response (Success)" in sent.stdout + sent.stderr, (
        f"{sent.stdout}\n{sent.stderr}\n{service.describe()}")


def _transfers_for_photo(service: ServiceProcess, photo_sop_uid: str) -> list:
    """Every transfer of every result of the photo, read from the service's database."""
    with service.repository() as repository:
        photo = repository.find_photo(photo_sop_uid)
        assert photo is not None, f"photo {photo_sop_uid} is not in the database"
        return [transfer for appraisal in repository.appraisals_for_photo(photo.id)
                for result in repository.result_objects_for(appraisal.id)
                for transfer in repository.transfers_for(result.id)]


def _assert_one_sc_and_one_pdf(rig: Rig, header: pydicom.Dataset) -> None:
    """Both results arrived, once each, and no transfer is left that could send more."""
    wait_for_results(rig.service, rig.scp, str(header.StudyInstanceUID), count=2, timeout=150)
    transfers = _transfers_for_photo(rig.service, str(header.SOPInstanceUID))
    assert sorted(t.state.value for t in transfers) == ["done", "done"], transfers
    received = rig.scp.received_for_study(str(header.StudyInstanceUID))
    context = f"{[i.path.name for i in received]}\n{rig.service.describe()}"
    assert sorted(i.sop_class_uid for i in received) == sorted([SC_STORAGE, ENCAPSULATED_PDF_STORAGE]), context
    assert len({i.sop_instance_uid for i in received}) == 2, context


def _ts(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["ts"])


def test_destination_down_then_up_gets_both_results(rig: Rig):
    rig.scp.stop()
    assert not port_accepts(rig.scp.port)
    service = rig.ensure_running(FAST_STEPS)
    path, header = rig.photo("dest-down", "DUR-DOWN")
    _send(service, path)

    failed = service.wait_for_log("delivery failed; will retry", timeout=90)
    # The database agrees: a pending transfer with at least one attempt behind it.
    transfers = [t for t in _transfers_for_photo(service, str(header.SOPInstanceUID))
                 if t.id == failed[0]["transfer_id"]]
    assert [(t.state.value, t.attempts >= 1, t.error_code) for t in transfers] == [
        ("pending", True, "no_association")], transfers

    rig.scp.start()
    _assert_one_sc_and_one_pdf(rig, header)
    delivered = service.matching("result delivered")
    assert max(r["attempt"] for r in delivered) >= 2, service.describe()


def test_kill_after_acknowledge_then_restart_delivers_once(rig: Rig):
    if rig.scp.process is None or rig.scp.process.poll() is not None:
        rig.scp.start()
    service = rig.ensure_running(FAST_STEPS)
    path, header = rig.photo("kill-after-ack", "DUR-ACK")
    _send(service, path)
    service.kill()  # SIGKILL right after the acknowledgement
    sop_uid = str(header.SOPInstanceUID)
    [recorded] = service.matching("photo recorded", sop_uid=sop_uid)  # committed before the ack
    assert not service.matching("job succeeded", job_id=recorded["job_id"]), "the job finished before the kill"

    service.start(CLEFTSCORE_INVERSION_STEPS=SLOW_STEPS)  # the next test reuses this run
    service.wait_for_log("job succeeded", job_id=recorded["job_id"], timeout=150)
    _assert_one_sc_and_one_pdf(rig, header)
    assert not service.matching("photo recorded", sop_uid=sop_uid), "the photo was not sent again"


def test_kill_during_job_then_restart_reclaims_after_lease(rig: Rig):
    if rig.scp.process is None or rig.scp.process.poll() is not None:
        rig.scp.start()
    service = rig.ensure_running(SLOW_STEPS)
    path, header = rig.photo("kill-during-job", "DUR-JOB")
    _send(service, path)
    [recorded] = service.wait_for_log("photo recorded", sop_uid=str(header.SOPInstanceUID), timeout=30)
    job_id = recorded["job_id"]
    [claimed] = service.wait_for_log("job claimed", job_id=job_id, timeout=60)
    service.kill()
    assert not service.matching("job succeeded", job_id=job_id), "the job finished before the kill"
    assert not rig.scp.received_for_study(str(header.StudyInstanceUID))

    service.start(CLEFTSCORE_INVERSION_STEPS=FAST_STEPS)  # the rerun needn't be slow
    [reclaimed] = service.wait_for_log("job claimed", job_id=job_id, timeout=60)
    assert reclaimed["attempt"] == claimed["attempt"] + 1, service.describe()
    assert _ts(reclaimed) >= _ts(claimed) + dt.timedelta(seconds=LEASE_S), "reclaimed before the lease expired"
    service.wait_for_log("job succeeded", job_id=job_id, timeout=150)
    _assert_one_sc_and_one_pdf(rig, header)
