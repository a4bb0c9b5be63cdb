"""Intake under load: our listener against dcmtk's storescp, same load, same run, same machine.

One command: ``.venv/bin/python -m benchmarks.intake [--associations 8] [--photos 25]``.

1. Starts ``cleftscore serve --demo`` on a fresh data folder and measures start-up to the first
   successful C-ECHO.
2. Sends one photo and waits until it is being scored (a long inversion keeps the scorer busy for
   the whole run), so intake is measured "while a photo is being scored".
3. Sends the load to our listener: ``--associations`` concurrent associations, each storing
   ``--photos`` photos (a real JPEG photo wrapped as VL Photographic Image, JPEG baseline, a new SOP
   Instance UID each), and records every C-STORE's latency (request sent → response received).
4. Starts dcmtk's ``storescp --fork +xy`` (JPEG accepted) on another port and sends it the same load, while our service
   goes on scoring, so both targets share the machine's load.
5. Prints both, their ratio (goal: throughput >= 0.5x storescp, our p99 < 200 ms) and writes
   ``benchmarks/results/intake-<date>.json`` with the machine, the command and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def photo_dataset(jpeg: bytes, width: int, height: int, patient_id: str) -> Dataset:
    """A VL Photographic Image wrapping ``jpeg`` as JPEG baseline, as img2dcm would."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = VL_PHOTO
    ds.SOPClassUID = VL_PHOTO
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Benchmark^Intake"
    ds.StudyDate = "20260110"
    ds.Modality = "XC"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = height, width
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True  # encapsulated pixel data has undefined length
    return ds


def echo_ok(port: int, called: str) -> bool:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def send_load(port: int, called: str, make_photo, associations: int, photos: int) -> dict:
    """``associations`` concurrent associations × ``photos`` C-STOREs of ``make_photo()``; latency of each.

    Every data set is built before the clock starts (each its own object: threads share nothing).
    """
    batches = [[make_photo() for _ in range(photos)] for _ in range(associations)]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one_association(index: int) -> None:
        ae = AE(ae_title=f"BENCH{index}")
        ae.add_requested_context(VL_PHOTO, JPEGBaseline8Bit)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        if not assoc.is_established:
            with lock:
                failures.append(f"association {index} not established")
            return
        try:
            for ds in batches[index]:
                started = time.perf_counter()
                status = assoc.send_c_store(ds)
                elapsed = time.perf_counter() - started
                with lock:
                    if status and status.Status == 0:
                        latencies.append(elapsed)
                    else:
                        failures.append(f"status {getattr(status, 'Status', None)}")
        finally:
            assoc.release()

    threads = [threading.Thread(target=one_association, args=(i,)) for i in range(associations)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    return {
        "stored": len(latencies), "failed": len(failures), "failures": failures[:5], "wall_s": round(wall, 3),
        "photos_per_s": round(len(latencies) / wall, 2) if wall else 0.0,
        "latency_ms": {"p50": round(quantile(0.50) * 1000, 1), "p95": round(quantile(0.95) * 1000, 1),
                       "p99": round(quantile(0.99) * 1000, 1), "max": round(max(ordered, default=0) * 1000, 1),
                       "mean": round(statistics.fmean(ordered) * 1000, 1) if ordered else None},
    }


def running_jobs(data_dir: Path) -> int:
    database = data_dir / "cleftscore.db"
    if not database.exists():
        return 0
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0])
        except sqlite3.Error:
            return 0


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=8)
    parser.add_argument("--photos", type=int, default=25, help="photos per association")
    parser.add_argument("--photo", type=Path, default=REPO.parent / "shared" / "faces" / "obama.jpg")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/intake-DATE.json)")
    args = parser.parse_args(argv)
    from PIL import Image

    jpeg = args.photo.read_bytes()
    with Image.open(io.BytesIO(jpeg)) as image:
        width, height = image.size

    def make_photo() -> Dataset:
        return photo_dataset(jpeg, width, height, "BENCH-1")

    cleftscore = Path(sys.executable).parent / "cleftscore"
    storescp = shutil.which("storescp")
    if storescp is None:
        print("dcmtk's storescp is not installed (apt-get install dcmtk)", file=sys.stderr)
        return 2
    record: dict = {"command": " ".join([Path(sys.executable).name, "-m", "benchmarks.intake", *(argv or sys.argv[1:])]),
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "processor": platform.processor() or platform.machine()},
                    "load": {"associations": args.associations, "photos_per_association": args.photos,
                             "photo": args.photo.name, "photo_bytes": len(jpeg), "size": [width, height]}}
    with tempfile.TemporaryDirectory(prefix="intake-bench-") as scratch:
        data = Path(scratch) / "data"
        port = free_port()
        env = {**os.environ, "CLEFTSCORE_DATA_DIR": str(data), "CLEFTSCORE_PORT": str(port),
               "CLEFTSCORE_INVERSION_STEPS": "100000", "CLEFTSCORE_LOG_LEVEL": "WARNING"}
        subprocess.run([str(cleftscore), "models", "make-demo"], env=env, check=True, capture_output=True)
        log = open(Path(scratch) / "service.log", "w")
        started = time.perf_counter()
        service = subprocess.Popen([str(cleftscore), "serve", "--demo"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            while not echo_ok(port, "CLEFTSCORE"):
                if service.poll() is not None or time.perf_counter() - started > 120:
                    raise RuntimeError(f"the service did not answer C-ECHO; see {log.name}")
                time.sleep(0.05)
            record["ours_startup_to_echo_s"] = round(time.perf_counter() - started, 2)
            first = send_load(port, "CLEFTSCORE", make_photo, 1, 1)
            if first["stored"] != 1:
                raise RuntimeError(f"the first photo was not stored: {first}")
            deadline = time.perf_counter() + 300
            while running_jobs(data) == 0:
                if time.perf_counter() > deadline:
                    raise RuntimeError("no job started scoring within 300 s")
                time.sleep(0.2)
            record["ours"] = send_load(port, "CLEFTSCORE", make_photo, args.associations, args.photos)
            record["scoring_during_ours"] = running_jobs(data) > 0
            scp_port = free_port()
            scp_dir = Path(scratch) / "storescp"
            scp_dir.mkdir()
            scp = subprocess.Popen([storescp, "--fork", "+xy", "-aet", "STORESCP", "-od", str(scp_dir), str(scp_port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                while not echo_ok(scp_port, "STORESCP"):
                    time.sleep(0.05)
                record["storescp"] = send_load(scp_port, "STORESCP", make_photo, args.associations, args.photos)
            finally:
                stop(scp)
            record["scoring_during_storescp"] = running_jobs(data) > 0
        finally:
            stop(service)
            log.close()
    ours, theirs = record["ours"], record["storescp"]
    record["throughput_ratio"] = round(ours["photos_per_s"] / theirs["photos_per_s"], 3) if theirs["photos_per_s"] else None
    record["p99_ratio"] = round(ours["latency_ms"]["p99"] / theirs["latency_ms"]["p99"], 2) if theirs["latency_ms"]["p99"] else None
    record["goal_met"] = bool(record["throughput_ratio"] and record["throughput_ratio"] >= 0.5
                              and ours["latency_ms"]["p99"] < 200 and ours["failed"] == 0)
    print(f"start-up to C-ECHO: {record['ours_startup_to_echo_s']} s")
    print(f"{'target':10} {'photos/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'failed':>7}")
    for name in ("ours", "storescp"):
        item = record[name]
        print(f"{name:10} {item['photos_per_s']:9.2f} {item['latency_ms']['p50']:8.1f} {item['latency_ms']['p95']:8.1f} "
              f"{item['latency_ms']['p99']:8.1f} {item['failed']:7d}")
    print(f"throughput ratio {record['throughput_ratio']}, p99 ratio {record['p99_ratio']}, "
          f"scoring during both runs: {record['scoring_during_ours'] and record['scoring_during_storescp']}, "
          f"goal met: {record['goal_met']}")
    out = args.out or RESULTS / f"intake-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
