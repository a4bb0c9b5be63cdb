"""The one parser of AE titles and destinations, and sending to IPv6 peers with pynetdicom's status categories."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicom.addresses import Destination, parse_destinations, validate_ae_title
from dicom.sender import send_file
from tests.dicom.scp import ipv6_loopback_available, storage_scp

needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="this machine has no IPv6 loopback (::1)")


@pytest.mark.parametrize(("text", "expected", "written"), [
    ("PACS@10.0.0.5:104", Destination("PACS", "10.0.0.5", 104), "PACS@10.0.0.5:104"),
    (" PACS@[::1]:104 ", Destination("PACS", "::1", 104), "PACS@[::1]:104"),
    ("ARCHIVE@[fe80::1%eth0]:11112", Destination("ARCHIVE", "fe80::1%eth0", 11112), "ARCHIVE@[fe80::1%eth0]:11112"),
    ("A B@pacs.example.org:4242", Destination("A B", "pacs.example.org", 4242), "A B@pacs.example.org:4242"),
])
def test_destinations_round_trip(text, expected, written):
    assert Destination.parse(text) == expected
    assert str(expected) == written and Destination.parse(written) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("PACS@::1:104", "put an IPv6 address in brackets, AE@[::1]:104"),
    ("PACS@host", "has no numeric port"),
    ("PACS@host:", "has no numeric port"),
    ("PACS@[pacs.example]:104", "brackets are for IPv6 addresses only"),
    ("A_TITLE_LONGER_THAN_16@h:104", "AE title 'A_TITLE_LONGER_THAN_16' is longer than 16 characters"),
    ("@h:104", "AE title is empty"),
    ("PA\\CS@h:104", "backslash"),
    ("PACS@h:0", "the port must be 1-65535, got 0"),
    ("PACS@h:70000", "the port must be 1-65535, got 70000"),
    ("PACS@bad host:104", "'bad host' is not a host name or IP address"),
])
def test_bad_destinations_get_one_clear_sentence(text, message):
    with pytest.raises(ValueError) as caught:
        Destination.parse(text)
    assert str(caught.value).startswith(f"destination {text!r}") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_destination_lists_and_ae_titles():
    assert parse_destinations("A@h:1, B@[::1]:2,") == (Destination("A", "h", 1), Destination("B", "::1", 2))
    assert parse_destinations(["A@h:1", Destination("B", "h", 2)]) == (Destination("A", "h", 1), Destination("B", "h", 2))
    assert validate_ae_title("  PACS ") == "PACS"
    with pytest.raises(ValueError, match="longer than 16"):
        validate_ae_title("X" * 17)
    with pytest.raises(TypeError):
        validate_ae_title(104)


@pytest.fixture()
def small_file(tmp_path):
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "ADDR-1", "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "object.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


@needs_ipv6
def test_send_to_an_ipv6_destination(small_file):
    with storage_scp("STORE", "::1") as scp:
        destination = Destination.parse(scp.destination)
        assert scp.destination.startswith("STORE@[::1]:") and destination.host == "::1"
        outcome = send_file(small_file, destination, "CLEFTSCORE", timeout=10)
        assert outcome.success and outcome.status == 0x0000, outcome.message
        assert [str(ds.SOPInstanceUID) for ds in scp.wait_for(1, 10)] == [pydicom.dcmread(small_file).SOPInstanceUID]


@pytest.mark.parametrize(("status", "success", "text"), [
    (0xB000, True, "stored by STORE@127.0.0.1:{port} with warning 0xB000 (Coercion of Data Elements)"),
    (0xB007, True, "with warning 0xB007 (Data Set Does Not Match SOP Class)"),
    (0x0107, True, "with warning 0x0107"),  # a general warning: pynetdicom's category says so
    (0xA700, False, "STORE@127.0.0.1:{port} refused with 0xA700 (Refused: Out of Resources)"),
    (0xC123, False, "refused with 0xC123 (Cannot Understand)"),
])
def test_c_store_statuses_follow_pynetdicom_categories(small_file, status, success, text):
    with storage_scp("STORE", "127.0.0.1") as scp:
        scp.status = status
        outcome = send_file(small_file, Destination.parse(scp.destination), "CLEFTSCORE", timeout=10)
    assert (outcome.success, outcome.status) == (success, status)
    assert text.format(port=scp.port) in outcome.message
