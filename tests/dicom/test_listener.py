"""dicom.listener against real dcmtk peers (storescu, echoscu), plain TCP and TLS.

Every external process runs under a timeout; listeners bind port 0 on loopback
and are stopped in fixture teardown.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from dicom.listener import (
    STATUS_BAD_STUDY_OR_SERIES_UID,
    STATUS_CONSUMER_FAILED,
    STATUS_OUT_OF_RESOURCES,
    DicomListener,
    ListenerConfig,
    ReceivedPhoto,
    TLSServerSettings,
    build_listener,
    peer_is_allowed,
)
from dicom.photo import decode_rgb
from dicom.sender import Destination, TLSClientSettings, send_file
from dicom.storage import DicomFileStore, StoreOutcome

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("storescu", "echoscu", "img2dcm", "dcmdjpeg", "openssl")),
    reason="needs dcmtk and openssl",
)

LISTENER_AE = "CLEFTSCORE"
MODALITY_AE = "MODALITY"
STUDY_UID = "1.2.826.0.1.3680043.10.1234.99.1"


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def storescu(port: int, *files: Path, options: tuple[str, ...] = (), calling: str = MODALITY_AE,
             called: str = LISTENER_AE) -> subprocess.CompletedProcess:
    return _run("storescu", "-v", "-to", "10", "-ta", "10", "-td", "10", *options,
                "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files))


# ------------------------------------------------------------------------ test objects


@pytest.fixture(scope="module")
def photo_jpeg(tmp_path_factory, faces_dir: Path) -> Path:
    """obama.jpg wrapped by img2dcm: VL Photographic, JPEG Baseline, YBR_FULL_422."""
    path = tmp_path_factory.mktemp("objects") / "photo_jpeg.dcm"
    keys = [f"PatientID=P-0001", "PatientName=Test^Obama", f"StudyInstanceUID={STUDY_UID}",
            "StudyDate=20240305", "StudyTime=081500", "StudyID=S1", "SeriesNumber=1", "InstanceNumber=1",
            "AccessionNumber=ACC1", "Manufacturer=Canon"]
    args = [arg for key in keys for arg in ("-k", key)]
    result = _run("img2dcm", "-vlp", *args, str(faces_dir / "obama.jpg"), str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def photo_uncompressed(photo_jpeg: Path) -> Path:
    path = photo_jpeg.with_name("photo_raw.dcm")
    assert _run("dcmdjpeg", str(photo_jpeg), str(path)).returncode == 0
    return path


@pytest.fixture(scope="module")
def photo_without_patient_id(tmp_path_factory, faces_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("objects") / "no_patient.dcm"
    assert _run("img2dcm", "-vlp", str(faces_dir / "obama.jpg"), str(path)).returncode == 0
    return path


@pytest.fixture(scope="module")
def photo_with_unsafe_study_uid(photo_uncompressed: Path) -> Path:
    ds = pydicom.dcmread(photo_uncompressed)
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.StudyInstanceUID = "1.2/../../../../tmp/evil"
    path = photo_uncompressed.with_name("unsafe_study.dcm")
    ds.save_as(path)
    return path


@pytest.fixture(scope="module")
def ct_image(tmp_path_factory) -> Path:
    """A small CT Image Storage object: not a photograph."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "P-CT", "CT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    path = tmp_path_factory.mktemp("objects") / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA with server and client certificates (RSA 2048, openssl CLI)."""
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        result = _run("openssl", *args)
        assert result.returncode == 0, result.stderr

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Cleftscore Test CA",
            "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name in ("server", "client"):
        extensions = folder / f"{name}.ext"
        extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                              "extendedKeyUsage=serverAuth,clientAuth\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.csr"))
        openssl("x509", "-req", "-in", str(folder / f"{name}.csr"), "-CA", str(folder / "ca.crt"),
                "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2",
                "-extfile", str(extensions), "-out", str(folder / f"{name}.crt"))
    return {name: folder / name for name in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


# --------------------------------------------------------------------------- listener


class Recorder:
    """An on_photo consumer that checks the file is complete when it is called."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.photos: list[ReceivedPhoto] = []
        self.fail_with = fail_with

    def __call__(self, photo: ReceivedPhoto) -> None:
        assert hashlib.sha256(photo.path.read_bytes()).hexdigest() == photo.sha256
        self.photos.append(photo)
        if self.fail_with is not None:
            raise self.fail_with


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def start_listener(storage_root: Path) -> Iterator[Callable[..., DicomListener]]:
    started: list[DicomListener] = []

    def start(recorder: Recorder, *, reserve_bytes: int = 0, **overrides) -> DicomListener:
        config = ListenerConfig(ae_title=LISTENER_AE, port=0, bind_address="127.0.0.1",
                                allowed_calling_ae_titles=frozenset({MODALITY_AE, "RESULTS"}),
                                acse_timeout_s=10, dimse_timeout_s=10, network_timeout_s=10)
        config = replace(config, **overrides)
        listener = build_listener(config, DicomFileStore(storage_root, reserve_bytes=reserve_bytes), recorder)
        listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------ tests


def test_echo(start_listener) -> None:
    listener = start_listener(Recorder())
    result = _run("echoscu", "-to", "10", "-aet", MODALITY_AE, "-aec", LISTENER_AE, "127.0.0.1", str(listener.port))
    assert result.returncode == 0, result.stderr


def test_jpeg_photo_from_storescu_is_stored_atomically_and_recorded(
    start_listener, storage_root, photo_jpeg, faces_dir
) -> None:
    recorder = Recorder()
    listener = start_listener(recorder)
    result = storescu(listener.port, photo_jpeg, options=("-xy",))
    assert result.returncode == 0, result.stdout + result.stderr

    [photo] = recorder.photos
    original = pydicom.dcmread(photo_jpeg)
    assert photo.path == storage_root / STUDY_UID / original.SeriesInstanceUID / f"{original.SOPInstanceUID}.dcm"
    assert stored_files(storage_root) == [photo.path]  # no temporary file left behind
    assert photo.outcome is StoreOutcome.CREATED
    assert photo.transfer_syntax_uid == JPEGBaseline8Bit
    assert photo.calling_ae_title == MODALITY_AE and photo.peer_address == "127.0.0.1"
    assert photo.received_at.tzinfo is not None
    assert photo.context.patient.patient_id == "P-0001"
    assert photo.context.study.accession_number == "ACC1"
    assert photo.intake_problems == ()

    stored = pydicom.dcmread(photo.path)
    assert stored == original  # the data set exactly as sent
    assert stored.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    rgb = decode_rgb(photo.path)
    reference = np.asarray(Image.open(faces_dir / "obama.jpg").convert("RGB"))
    error = np.abs(rgb.astype(int) - reference.astype(int))
    assert rgb.shape == reference.shape and error.max() <= 4 and error.mean() < 0.5


@pytest.mark.parametrize(
    "options, expected_ts",
    [((), "1.2.840.10008.1.2.1"), (("-xi",), "1.2.840.10008.1.2"), (("-xd",), "1.2.840.10008.1.2.1.99")],
    ids=["explicit", "implicit", "deflated"],
)
def test_uncompressed_photo_from_storescu(start_listener, photo_uncompressed, options, expected_ts) -> None:
    recorder = Recorder()
    listener = start_listener(recorder)
    result = storescu(listener.port, photo_uncompressed, options=options)
    assert result.returncode == 0, result.stdout + result.stderr
    [photo] = recorder.photos
    assert photo.transfer_syntax_uid == expected_ts
    assert pydicom.dcmread(photo.path).file_meta.TransferSyntaxUID == expected_ts
    np.testing.assert_array_equal(decode_rgb(photo.path), pydicom.dcmread(photo_uncompressed).pixel_array)


def test_same_sop_instance_twice_is_idempotent(start_listener, storage_root, photo_jpeg) -> None:
    recorder = Recorder()
    listener = start_listener(recorder)
    for _ in range(2):
        assert storescu(listener.port, photo_jpeg, options=("-xy",)).returncode == 0
    assert [p.outcome for p in recorder.photos] == [StoreOutcome.CREATED, StoreOutcome.UNCHANGED]
    assert recorder.photos[0].path == recorder.photos[1].path
    assert stored_files(storage_root) == [recorder.photos[0].path]


def test_photo_without_patient_id_is_stored_and_flagged(start_listener, photo_without_patient_id) -> None:
    recorder = Recorder()
    listener = start_listener(recorder)
    assert storescu(listener.port, photo_without_patient_id, options=("-xy",)).returncode == 0
    [photo] = recorder.photos
    assert photo.context.patient.patient_id is None
    assert any("Patient ID" in problem for problem in photo.intake_problems)
    assert photo.path.is_file()


def test_non_photo_sop_class_is_refused_at_negotiation(start_listener, storage_root, ct_image) -> None:
    recorder = Recorder()
    listener = start_listener(recorder)
    result = storescu(listener.port, ct_image)
    assert result.returncode != 0
    assert "no presentation context" in (result.stdout + result.stderr).lower()
    outcome = send_file(ct_image, Destination(LISTENER_AE, "127.0.0.1", listener.port), MODALITY_AE, timeout=10)
    assert not outcome.success and outcome.status is None
    assert "accepted no presentation context" in outcome.message
    assert recorder.photos == [] and stored_files(storage_root) == []


def test_unknown_calling_ae_title_is_rejected(start_listener, storage_root, photo_jpeg) -> None:
    recorder = Recorder()
    listener = start_listener(recorder)
    result = storescu(listener.port, photo_jpeg, options=("-xy",), calling="INTRUDER")
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr
    result = storescu(listener.port, photo_jpeg, options=("-xy",), called="SOMEONE_ELSE")
    assert "Called AE Title Not Recognized" in result.stderr
    assert recorder.photos == [] and stored_files(storage_root) == []


def test_peer_address_allow_list(start_listener, photo_jpeg) -> None:
    recorder = Recorder()
    elsewhere = start_listener(recorder, allowed_peer_networks=("10.0.0.0/8", "fd00::/8"))
    result = storescu(elsewhere.port, photo_jpeg, options=("-xy",))
    assert result.returncode != 0 and "Association Rejected" in result.stderr
    loopback = start_listener(recorder, allowed_peer_networks=("127.0.0.0/8",))
    assert storescu(loopback.port, photo_jpeg, options=("-xy",)).returncode == 0
    assert len(recorder.photos) == 1


def test_peer_is_allowed_handles_mapped_ipv6() -> None:
    import ipaddress

    networks = (ipaddress.ip_network("192.168.0.0/16"),)
    assert peer_is_allowed("::ffff:192.168.1.5", networks)
    assert not peer_is_allowed("192.169.0.1", networks)
    assert not peer_is_allowed("not-an-ip", networks)
    assert peer_is_allowed("anything", None)


def test_consumer_failure_is_a_c0xx_status_not_an_ack(start_listener, photo_jpeg) -> None:
    recorder = Recorder(fail_with=RuntimeError("database is down"))
    listener = start_listener(recorder)
    result = storescu(listener.port, photo_jpeg, options=("-xy",))
    assert result.returncode != 0
    assert "Error: CannotUnderstand" in result.stdout + result.stderr
    outcome = send_file(photo_jpeg, Destination(LISTENER_AE, "127.0.0.1", listener.port), MODALITY_AE, timeout=10)
    assert (outcome.success, outcome.status) == (False, STATUS_CONSUMER_FAILED)
    assert "could not be recorded" in outcome.message
    # The listener keeps serving after the failure.
    recorder.fail_with = None
    assert storescu(listener.port, photo_jpeg, options=("-xy",)).returncode == 0


def test_storage_reserve_reached_answers_out_of_resources(start_listener, storage_root, photo_jpeg) -> None:
    recorder = Recorder()
    listener = start_listener(recorder, reserve_bytes=shutil.disk_usage(storage_root).free + 2**30)
    result = storescu(listener.port, photo_jpeg, options=("-xy",))
    assert result.returncode != 0
    assert "OutOfResources" in result.stdout + result.stderr
    outcome = send_file(photo_jpeg, Destination(LISTENER_AE, "127.0.0.1", listener.port), MODALITY_AE, timeout=10)
    assert (outcome.success, outcome.status) == (False, STATUS_OUT_OF_RESOURCES)
    assert recorder.photos == [] and stored_files(storage_root) == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the sender reads the bad file
def test_unsafe_study_uid_is_refused_and_nothing_escapes_the_root(
    start_listener, storage_root, photo_with_unsafe_study_uid
) -> None:
    recorder = Recorder()
    listener = start_listener(recorder)
    outcome = send_file(photo_with_unsafe_study_uid, Destination(LISTENER_AE, "127.0.0.1", listener.port),
                        MODALITY_AE, timeout=10)
    assert (outcome.success, outcome.status) == (False, STATUS_BAD_STUDY_OR_SERIES_UID)
    assert recorder.photos == [] and stored_files(storage_root) == []
    assert not Path("/tmp/evil").exists()


# -------------------------------------------------------------------------------- TLS


def _tls_settings(certificates, *, require_client_cert: bool) -> TLSServerSettings:
    return TLSServerSettings(certificates["server.crt"], certificates["server.key"],
                             certificates["ca.crt"] if require_client_cert else None)


def test_storescu_over_tls_with_client_certificate(start_listener, certificates, photo_jpeg) -> None:
    recorder = Recorder()
    listener = start_listener(recorder, tls=_tls_settings(certificates, require_client_cert=True))
    # A client that connects and says nothing must not hold up the others: the
    # handshake runs on the connection's own thread.
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10):
        result = storescu(listener.port, photo_jpeg, options=(
            "-xy", "+tls", str(certificates["client.key"]), str(certificates["client.crt"]),
            "+cf", str(certificates["ca.crt"])))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(recorder.photos) == 1


def test_tls_without_required_client_certificate_fails(start_listener, storage_root, certificates, photo_jpeg) -> None:
    recorder = Recorder()
    listener = start_listener(recorder, tls=_tls_settings(certificates, require_client_cert=True))
    anonymous = storescu(listener.port, photo_jpeg, options=("-xy", "+tla", "+cf", str(certificates["ca.crt"])))
    assert anonymous.returncode != 0
    plain = storescu(listener.port, photo_jpeg, options=("-xy",))
    assert plain.returncode != 0
    outcome = send_file(photo_jpeg, Destination(LISTENER_AE, "localhost", listener.port), MODALITY_AE, timeout=10,
                        tls=TLSClientSettings(certificates["ca.crt"]))
    assert not outcome.success and outcome.status is None
    assert recorder.photos == [] and stored_files(storage_root) == []


def test_sender_tls_to_listener(start_listener, certificates, photo_jpeg) -> None:
    recorder = Recorder()
    listener = start_listener(recorder, tls=_tls_settings(certificates, require_client_cert=True))
    tls = TLSClientSettings(certificates["ca.crt"], certificates["client.crt"], certificates["client.key"])
    outcome = send_file(photo_jpeg, Destination(LISTENER_AE, "localhost", listener.port), MODALITY_AE,
                        timeout=10, tls=tls)
    assert (outcome.success, outcome.status) == (True, 0x0000), outcome.message
    assert len(recorder.photos) == 1


def test_tls_with_optional_client_certificate(start_listener, certificates, photo_jpeg) -> None:
    recorder = Recorder()
    listener = start_listener(recorder, tls=_tls_settings(certificates, require_client_cert=False))
    result = storescu(listener.port, photo_jpeg, options=("-xy", "+tla", "+cf", str(certificates["ca.crt"])))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(recorder.photos) == 1


# ------------------------------------------------------------------------- validation


def test_listener_config_validation(certificates) -> None:
    base = dict(ae_title=LISTENER_AE, port=0, allowed_calling_ae_titles=None)
    with pytest.raises(ValueError, match="longer than 16"):
        ListenerConfig(**(base | {"ae_title": "A" * 17}))
    with pytest.raises(ValueError, match="port"):
        ListenerConfig(**(base | {"port": 70000}))
    with pytest.raises(ValueError, match="empty"):
        ListenerConfig(**(base | {"allowed_calling_ae_titles": frozenset()}))
    with pytest.raises(ValueError, match="not an IP address or network"):
        ListenerConfig(**(base | {"allowed_peer_networks": ("10.0.0.0/33",)}))
    with pytest.raises(ValueError, match="bind_address"):
        ListenerConfig(**(base | {"bind_address": "localhost"}))
    with pytest.raises(ValueError, match="not a readable file"):
        TLSServerSettings(Path("/nonexistent.crt"), certificates["server.key"])
    with pytest.raises(ValueError, match="cannot be loaded"):  # key does not match the certificate
        TLSServerSettings(certificates["server.crt"], certificates["client.key"])
    with pytest.raises(ValueError, match="together"):
        TLSClientSettings(certificates["ca.crt"], certificates["client.crt"])
