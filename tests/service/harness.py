"""Helpers for the end-to-end tests of ``cleftscore serve`` against real peers.

Everything here drives real processes: the service itself (``cleftscore serve --demo``
as a subprocess), dcmtk's ``storescp``/``storescu``/``img2dcm``/``dciodvfy`` and
``pdftotext`` (Orthanc and PostgreSQL are set up in their own test modules). Every
process is started in its own session, waited on with a timeout, and killed by its own
id when the test is done (also on failure). The service's JSON log lines are kept per
run and attached to assertion messages.

No tests here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

VENV_BIN = Path(sys.executable).parent
SERVICE_AE = "CLEFTSCORE"
DEMO_LABEL = "DEMO - NOT FOR CLINICAL USE"
DCMTK_TOOLS = ("img2dcm", "storescu", "storescp", "dciodvfy", "pdftotext")

#: Small, fast settings shared by every test service (see the task brief).
FAST_SETTINGS: Mapping[str, str] = {
    "CLEFTSCORE_INVERSION_STEPS": "5",
    "CLEFTSCORE_ADAPTATION_STEPS": "2",
    "CLEFTSCORE_SEND_BACKOFF_INITIAL_S": "1",
    "CLEFTSCORE_SEND_BACKOFF_MAX_S": "2",
    "CLEFTSCORE_DEVICE": "cpu",
    "CLEFTSCORE_LOG_LEVEL": "INFO",
}

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"


def cleftscore_executable() -> str:
    """The ``cleftscore`` console script of the running interpreter's environment."""
    candidate = VENV_BIN / "cleftscore"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("cleftscore")
    if found is None:
        raise FileNotFoundError(f"cleftscore is not installed beside {sys.executable} nor on PATH")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               describe: Callable[[], str] = lambda: "", interval: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``describe()`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{describe()}")
        time.sleep(interval)


def run(args: Sequence[str | Path], timeout: float = 60, env: Mapping[str, str] | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    """Run a program to completion with a timeout (killed when it overruns)."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                            env=dict(env) if env is not None else None)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def stop_process(process: subprocess.Popen, grace_s: float) -> None:
    """Terminate ``process`` (and the session it leads), killing it after ``grace_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# ------------------------------------------------------------------------ the service


def demo_bundle(cache_root: Path) -> Path:
    """A 64-pixel demo bundle made once per test session under ``cache_root`` (reused after)."""
    store = cache_root / "demo-bundle-store"
    bundle = store / "demo"
    if (bundle / "manifest.json").is_file():
        return bundle
    scratch = cache_root / f"demo-bundle-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CLEFTSCORE_DATA_DIR": str(scratch)}
    run([cleftscore_executable(), "models", "make-demo", "--resolution", "64", "--store", scratch / "models"],
        timeout=180, env=env, check=True)
    store.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # another process may have won the race; theirs is the same
        (scratch / "models" / "demo").rename(bundle)
    if not (bundle / "manifest.json").is_file():
        raise AssertionError(f"make-demo did not produce {bundle}")
    return bundle


def prepare_data_dir(data_dir: Path, bundle: Path) -> Path:
    """A data folder that already holds the small demo bundle, so ``serve --demo`` uses it."""
    target = data_dir / "models" / "demo"
    if not (target / "manifest.json").is_file():
        shutil.copytree(bundle, target)
    return data_dir


def service_env(data_dir: Path, port: int, destinations: Sequence[str], database_url: str | None = None,
                **settings: str | int | float) -> dict[str, str]:
    """The environment of one service: fast defaults, then ``settings`` (``job_lease_s=3`` → CLEFTSCORE_JOB_LEASE_S)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEFTSCORE_")}
    env.update(FAST_SETTINGS)
    env.update({
        "CLEFTSCORE_DATA_DIR": str(data_dir),
        "CLEFTSCORE_PORT": str(port),
        "CLEFTSCORE_BIND_ADDRESS": "127.0.0.1",
        "CLEFTSCORE_DESTINATIONS": ",".join(destinations),
        "OMP_NUM_THREADS": "2",
    })
    if database_url:
        env["CLEFTSCORE_DATABASE_URL"] = database_url
    env.update({f"CLEFTSCORE_{name.upper()}": str(value) for name, value in settings.items()})
    return env


class ServiceProcess:
    """``cleftscore serve --demo`` as a subprocess, with its log kept per run.

    ``start`` may be called again after ``kill`` or ``stop`` (same data folder, possibly
    changed environment); :meth:`records` reads the current run's JSON log lines.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.runs: list[Path] = []

    @property
    def port(self) -> int:
        return int(self.env["CLEFTSCORE_PORT"])

    @property
    def log_path(self) -> Path:
        if not self.runs:
            raise RuntimeError("the service was never started")
        return self.runs[-1]

    def start(self, timeout: float = 120, **changes: str) -> ServiceProcess:
        """Start the service (``changes`` update the environment) and wait for "service started"."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the service is already running")
        self.env.update(changes)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"service-run{len(self.runs) + 1}.log"
        self.runs.append(log_path)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [cleftscore_executable(), "serve", "--demo"], env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_for_log("service started", timeout=timeout)
        return self

    def records(self, run: int = -1) -> list[dict[str, Any]]:
        """The JSON log records of one run (default: the current one); other lines are skipped."""
        if not self.runs:
            return []
        text = self.runs[run].read_text(encoding="utf-8", errors="replace")
        found = []
        for line in text.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    found.append(json.loads(line))
        return found

    def matching(self, msg: str, run: int = -1, **fields: Any) -> list[dict[str, Any]]:
        """Records of one run whose message is ``msg`` and whose fields equal ``fields``."""
        return [r for r in self.records(run)
                if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items())]

    def wait_for_log(self, msg: str, *, count: int = 1, timeout: float = 60, **fields: Any) -> list[dict[str, Any]]:
        """Wait until the current run has logged ``msg`` (with ``fields``) ``count`` times."""

        def seen() -> list[dict[str, Any]] | None:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"the service exited with {self.process.returncode} while waiting for {msg!r}\n"
                            f"{self.describe()}")
            found = self.matching(msg, **fields)
            return found if len(found) >= count else None

        return wait_until(seen, timeout, f"{count} x log line {msg!r} {fields or ''}", self.describe)

    def describe(self, tail_lines: int = 80) -> str:
        """The last lines of every run's log, for assertion messages."""
        parts = []
        for path in self.runs:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
            parts.append(f"----- {path.name} (last {min(tail_lines, len(lines))} of {len(lines)} lines) -----")
            parts.extend(lines[-tail_lines:])
        return "\n".join(parts)

    def kill(self) -> None:
        """SIGKILL, as a crash would (no clean shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM (clean shutdown), SIGKILL after ``grace_s``."""
        if self.process is not None:
            stop_process(self.process, grace_s)

    @property
    def database_url(self) -> str:
        return self.env.get("CLEFTSCORE_DATABASE_URL") or f"sqlite:///{Path(self.env['CLEFTSCORE_DATA_DIR']) / 'cleftscore.db'}"

    @contextlib.contextmanager
    def repository(self) -> Iterator[Any]:
        """The service's database, opened by the test (``db.sql.SqlRepository``) to inspect rows."""
        from db.sql import SqlRepository

        repository = SqlRepository.from_url(self.database_url)
        try:
            yield repository
        finally:
            repository.close()

    def status(self, timeout: float = 120) -> dict[str, Any]:
        """``cleftscore status --json`` with this service's environment."""
        result = run([cleftscore_executable(), "status", "--json", "--limit", "50"], timeout=timeout, env=self.env)
        if result.returncode != 0:
            raise AssertionError(f"cleftscore status exited {result.returncode}: {result.stderr}\n{self.describe()}")
        return json.loads(result.stdout)


@contextlib.contextmanager
def running_service(root: Path, bundle: Path, destinations: Sequence[str], database_url: str | None = None,
                    **settings: str | int | float) -> Iterator[ServiceProcess]:
    """A started service with data in ``root/data`` and logs in ``root/logs``; stopped (or killed) on exit."""
    data_dir = prepare_data_dir(root / "data", bundle)
    service = ServiceProcess(service_env(data_dir, free_port(), destinations, database_url, **settings), root / "logs")
    try:
        service.start()
        yield service
    finally:
        service.stop()


# ------------------------------------------------------------------------ dcmtk peers


class StoreSCP:
    """A dcmtk ``storescp`` destination writing every received object to its own file."""

    def __init__(self, ae_title: str, port: int, directory: Path) -> None:
        self.ae_title = ae_title
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.log_path = directory.parent / f"storescp-{ae_title}-{port}.log"

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> StoreSCP:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # +uf: a new file per received object, so a duplicate delivery shows as an extra file.
            self.process = subprocess.Popen(
                ["storescp", "--fork", "+uf", "-aet", self.ae_title, "-od", str(self.directory), str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(lambda: self.process.poll() is not None or port_accepts(self.port), timeout,
                   f"storescp on port {self.port}")
        if self.process.poll() is not None:
            pytest.fail(f"storescp exited {self.process.returncode}: {self.log_path.read_text()}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 5)

    def received(self) -> list[ReceivedObject]:
        """Every complete object received so far (files still being written are skipped)."""
        found = []
        for path in sorted(self.directory.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - being written right now; read it next time
                continue
            found.append(ReceivedObject(path, ds))
        return found

    def received_for_study(self, study_uid: str) -> list[ReceivedObject]:
        return [item for item in self.received() if item.study_uid == study_uid]

    def wait_for_study(self, study_uid: str, count: int, timeout: float,
                       describe: Callable[[], str] = lambda: "") -> list[ReceivedObject]:
        """Wait until ``count`` objects of the study arrived; returns them."""

        def enough() -> list[ReceivedObject] | None:
            items = self.received_for_study(study_uid)
            return items if len(items) >= count else None

        return wait_until(enough, timeout, f"{count} objects of study {study_uid} at {self.destination}",
                          lambda: f"received: {[i.path.name for i in self.received()]}\n{describe()}")


@dataclass(frozen=True)
class ReceivedObject:
    path: Path
    dataset: pydicom.Dataset

    @property
    def study_uid(self) -> str:
        return str(self.dataset.get("StudyInstanceUID", ""))

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def wait_for_results(service: ServiceProcess, scp: StoreSCP, study_uid: str, count: int = 2,
                     timeout: float = 120) -> list[ReceivedObject]:
    """Wait until ``count`` results of the study were received by ``scp`` and the service logged
    each as delivered (so storescp has finished writing them); returns them."""
    deadline = time.monotonic() + timeout
    items = scp.wait_for_study(study_uid, count, timeout, service.describe)

    def all_delivered() -> bool:
        delivered = {r.get("sop_uid") for run in range(len(service.runs))
                     for r in service.matching("result delivered", run=run)}
        return all(item.sop_instance_uid in delivered for item in items)

    wait_until(all_delivered, max(1.0, deadline - time.monotonic()),
               f"'result delivered' for {[i.sop_instance_uid for i in items]}", service.describe)
    return scp.received_for_study(study_uid)


def img2dcm(source: Path, target: Path, **keys: str) -> Path:
    """Wrap a JPEG photo as DICOM (Secondary Capture, JPEG Baseline) with ``keys`` set (``PatientID="P1"``)."""
    args: list[str | Path] = ["img2dcm"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    run([*args, source, target], timeout=60, check=True)
    return target


def storescu(port: int, *files: Path, called_ae: str = SERVICE_AE, calling_ae: str = "MODALITY",
             options: Sequence[str] = ("-xy",), timeout: float = 60) -> subprocess.CompletedProcess:
    """Send ``files`` with dcmtk storescu; returns the finished process (check ``returncode``)."""
    return run(["storescu", "-v", "-to", "10", "-ta", "10", "-td", "30", *options, "-aet", calling_ae,
                "-aec", called_ae, "127.0.0.1", str(port), *files], timeout=timeout)


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dciodvfy reports for ``path`` (warnings are ignored)."""
    result = run(["dciodvfy", path], timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def pdf_text(dataset: pydicom.Dataset, scratch: Path) -> str:
    """The text of an Encapsulated PDF's document, by ``pdftotext``."""
    scratch.mkdir(parents=True, exist_ok=True)
    pdf = scratch / f"{dataset.SOPInstanceUID}.pdf"
    pdf.write_bytes(bytes(dataset.EncapsulatedDocument))
    result = run(["pdftotext", "-layout", pdf, "-"], timeout=60, check=True)
    return result.stdout


def read_full(item: ReceivedObject) -> pydicom.Dataset:
    return pydicom.dcmread(item.path)
