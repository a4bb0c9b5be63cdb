"""``cleftscore serve --demo`` delivers to an IPv6 destination (``AE@[::1]:port``, a pynetdicom Storage
SCP: dcmtk's storescp does not listen on IPv6) and appraises in the configured mode (CLEFTSCORE_MODE=fast)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from tests.dicom.scp import ipv6_loopback_available, storage_scp
from tests.service.harness import DCMTK_TOOLS, demo_bundle, img2dcm, running_service, storescu

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(t) is None for t in DCMTK_TOOLS), reason=f"needs {', '.join(DCMTK_TOOLS)}"),
    pytest.mark.skipif(not ipv6_loopback_available(), reason="this machine has no IPv6 loopback (::1)"),
]


def test_fast_mode_service_delivers_to_an_ipv6_destination(tmp_path, tmp_path_factory, faces_dir: Path):
    bundle = demo_bundle(tmp_path_factory.getbasetemp())
    photo = img2dcm(faces_dir / "obama.jpg", tmp_path / "obama.dcm", PatientID="IPV6-0001", StudyDate="20240305")
    source = pydicom.dcmread(photo, stop_before_pixels=True)
    with storage_scp("STOREV6", "::1") as scp, \
            running_service(tmp_path, bundle, [scp.destination], mode="fast") as service:
        assert scp.destination.startswith("STOREV6@[::1]:")
        [started] = service.matching("service started")
        assert started["mode"] == "fast" and started["destinations"] == scp.destination, service.describe()
        sent = storescu(service.port, photo)
        assert sent.returncode == 0, f"storescu failed:\n{sent.stdout}\n{sent.stderr}\n{service.describe()}"
        service.wait_for_log("result delivered", count=2, timeout=180)
        received = scp.wait_for(2, timeout=10)
        assert {str(ds.StudyInstanceUID) for ds in received} == {str(source.StudyInstanceUID)}, service.describe()
        assert not service.matching("transfer refused: bad destination")
        with service.repository() as repository:
            stored = repository.find_photo(str(source.SOPInstanceUID))
            [appraisal] = repository.appraisals_for_photo(stored.id)
            assert appraisal.settings["mode"] == "fast"
            assert appraisal.settings["inversion"]["steps"] == 5 and appraisal.settings["adaptation"]["steps"] == 2
            transfers = [t for r in repository.result_objects_for(appraisal.id) for t in repository.transfers_for(r.id)]
            assert {t.destination for t in transfers} == {scp.destination}
            assert {t.state.value for t in transfers} == {"done"}
