"""Service configuration: environment variables, JSON file, command-line overrides, validation, redaction.

Every invalid value is refused by :func:`load_config` with one line naming the variable, and by
``cleftscore config`` with that line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import pytest

from dicom.addresses import Destination
from dicom.uids import DEFAULT_UID_ROOT
from service.cli.main import main
from service.config.settings import ConfigError, load_config

CLI = [sys.executable, "-c", "import sys; from service.cli.main import main; sys.exit(main())"]


def test_defaults_are_embedded_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config({})
    assert config.ae_title == "CLEFTSCORE" and config.port == 11112
    assert config.data_dir == tmp_path / "data"
    assert config.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'cleftscore.db'}"
    assert config.inversion_steps == 2000 and config.adaptation_steps == 50
    assert (config.mode, config.device, config.bundle, config.demo) == ("paper", "auto", "default", False)
    assert config.uid_root == DEFAULT_UID_ROOT == "1.2.826.0.1.3680043.10.1187."
    assert (config.send_max_attempts, config.send_backoff_initial_s, config.send_backoff_max_s) == (20, 5.0, 600.0)
    assert (config.job_max_attempts, config.job_lease_s, config.workers, config.storage_reserve_mb) == (3, 3600.0, 1, 1024)
    assert config.destinations == () and config.allowed_aes == () and config.allowed_addresses == ()


def test_only_the_given_environment_is_read(monkeypatch):
    monkeypatch.setenv("CLEFTSCORE_PORT", "1234")
    assert load_config({}).port == 11112
    assert load_config({"CLEFTSCORE_PORT": "1234"}).port == 1234


def test_environment_variables(tmp_path):
    env = {
        "CLEFTSCORE_AE_TITLE": "CLEFT1", "CLEFTSCORE_PORT": "4242", "CLEFTSCORE_DATA_DIR": str(tmp_path),
        "CLEFTSCORE_DATABASE_URL": "postgresql+psycopg2://svc:s3cret@db.example:5432/cleft",
        "CLEFTSCORE_DESTINATIONS": "PACS@10.0.0.5:104, ARCHIVE@[::1]:11113",
        "CLEFTSCORE_ALLOWED_AES": "MODALITY,PACS", "CLEFTSCORE_ALLOWED_ADDRESSES": "10.1.0.0/16, 192.168.1.7,::1",
        "CLEFTSCORE_INVERSION_STEPS": "300", "CLEFTSCORE_ADAPTATION_STEPS": "10", "CLEFTSCORE_DEVICE": "cuda:0",
        "CLEFTSCORE_BUNDLE": "ffhq", "CLEFTSCORE_MODE": "Fast", "CLEFTSCORE_DEMO": "yes", "CLEFTSCORE_LOG_LEVEL": "debug",
        "CLEFTSCORE_TIMEZONE": "Europe/Berlin", "CLEFTSCORE_SHARED": "/not/a/setting",  # other CLEFTSCORE_ names are ignored
    }
    config = load_config(env)
    assert config.ae_title == "CLEFT1" and config.port == 4242 and config.data_dir == tmp_path
    assert config.destinations == (Destination("PACS", "10.0.0.5", 104), Destination("ARCHIVE", "::1", 11113))
    assert [str(d) for d in config.destinations] == ["PACS@10.0.0.5:104", "ARCHIVE@[::1]:11113"]
    assert config.allowed_aes == ("MODALITY", "PACS")
    assert config.allowed_addresses == (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("192.168.1.7/32"),
                                        ipaddress.ip_network("::1/128"))
    assert (config.inversion_steps, config.adaptation_steps, config.device, config.bundle) == (300, 10, "cuda:0", "ffhq")
    assert (config.mode, config.demo, config.log_level, config.timezone) == ("fast", True, "DEBUG", "Europe/Berlin")
    view = config.public_view()
    assert "s3cret" not in json.dumps(view) and view["database_url"].startswith("postgresql+psycopg2://svc:***@")
    assert view["destinations"] == ["PACS@10.0.0.5:104", "ARCHIVE@[::1]:11113"]
    assert view["allowed_addresses"] == ["10.1.0.0/16", "192.168.1.7/32", "::1/128"]


def test_file_then_environment_then_overrides(tmp_path):
    file = tmp_path / "cleftscore.json"
    file.write_text(json.dumps({"port": 2000, "ae_title": "FROMFILE", "workers": 2, "destinations": ["A@[::1]:104"],
                                "allowed_addresses": ["10.0.0.0/8"]}))
    config = load_config({"CLEFTSCORE_CONFIG_FILE": str(file), "CLEFTSCORE_PORT": "3000"}, {"workers": 3, "demo": None})
    assert (config.ae_title, config.port, config.workers) == ("FROMFILE", 3000, 3)
    assert config.destinations == (Destination("A", "::1", 104),)
    assert config.allowed_addresses == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(("contents", "message"), [
    ({"prot": 1}, "{file}: prot: is not a setting"),
    ({"job_max_attempts": 0}, "{file}: job_max_attempts: must be at least 1, got 0"),
    ({"destinations": "PACS@::1:104"}, "{file}: destinations: destination 'PACS@::1:104': put an IPv6 address in brackets"),
    ([1, 2], "CLEFTSCORE_CONFIG_FILE={file}: must hold one JSON object, got list"),
    ("{not json", "CLEFTSCORE_CONFIG_FILE={file}: cannot be read"),
])
def test_bad_config_files_name_the_file_and_key(tmp_path, contents, message):
    file = tmp_path / "cleftscore.json"
    file.write_text(contents if isinstance(contents, str) else json.dumps(contents))
    with pytest.raises(ConfigError) as caught:
        load_config({"CLEFTSCORE_CONFIG_FILE": str(file)})
    assert str(caught.value).startswith(message.format(file=file)), str(caught.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config({"CLEFTSCORE_CONFIG_FILE": str(tmp_path / "missing.json")})


#: (variable, bad value, the one line load_config raises, from its start). The holes this table closes:
#: attempts < 1, lease <= 0, backoffs <= 0 or initial > max, addresses parsed only at serve time.
BAD_SETTINGS = [
    ("CLEFTSCORE_JOB_MAX_ATTEMPTS", "0", "CLEFTSCORE_JOB_MAX_ATTEMPTS: must be at least 1, got 0"),
    ("CLEFTSCORE_SEND_MAX_ATTEMPTS", "-3", "CLEFTSCORE_SEND_MAX_ATTEMPTS: must be at least 1, got -3"),
    ("CLEFTSCORE_JOB_LEASE_S", "0", "CLEFTSCORE_JOB_LEASE_S: must be more than 0, got 0"),
    ("CLEFTSCORE_JOB_LEASE_S", "-5", "CLEFTSCORE_JOB_LEASE_S: must be more than 0, got -5"),
    ("CLEFTSCORE_JOB_LEASE_S", "inf", "CLEFTSCORE_JOB_LEASE_S: 'inf' is not a finite number"),
    ("CLEFTSCORE_SEND_BACKOFF_INITIAL_S", "0", "CLEFTSCORE_SEND_BACKOFF_INITIAL_S: must be more than 0, got 0"),
    ("CLEFTSCORE_SEND_BACKOFF_MAX_S", "-1", "CLEFTSCORE_SEND_BACKOFF_MAX_S: must be more than 0, got -1"),
    ("CLEFTSCORE_SEND_BACKOFF_INITIAL_S", "601",
     "CLEFTSCORE_SEND_BACKOFF_INITIAL_S: 601 is above CLEFTSCORE_SEND_BACKOFF_MAX_S (600)"),
    ("CLEFTSCORE_ALLOWED_ADDRESSES", "10.0.0.0/33",
     "CLEFTSCORE_ALLOWED_ADDRESSES: allowed peer network '10.0.0.0/33' is not an IP address or network"),
    ("CLEFTSCORE_ALLOWED_ADDRESSES", "10.0.0.1,pacs.example",
     "CLEFTSCORE_ALLOWED_ADDRESSES: allowed peer network 'pacs.example' is not an IP address or network"),
    ("CLEFTSCORE_ALLOWED_AES", "MODALITY,A_TITLE_LONGER_THAN_16",
     "CLEFTSCORE_ALLOWED_AES: AE title 'A_TITLE_LONGER_THAN_16' is longer than 16 characters"),
    ("CLEFTSCORE_DESTINATIONS", "PACS@::1:104",
     "CLEFTSCORE_DESTINATIONS: destination 'PACS@::1:104': put an IPv6 address in brackets, AE@[::1]:104"),
    ("CLEFTSCORE_DESTINATIONS", "PACS@pacs.example",
     "CLEFTSCORE_DESTINATIONS: destination 'PACS@pacs.example' has no numeric port (AE@host:port)"),
    ("CLEFTSCORE_DESTINATIONS", "PACS:104", "CLEFTSCORE_DESTINATIONS: destination 'PACS:104' is not of the form AE@host:port"),
    ("CLEFTSCORE_DESTINATIONS", "A_TITLE_LONGER_THAN_16@h:104",
     ("CLEFTSCORE_DESTINATIONS: destination 'A_TITLE_LONGER_THAN_16@h:104': AE title 'A_TITLE_LONGER_THAN_16' is longer "
      "than 16 characters")),
    ("CLEFTSCORE_DESTINATIONS", "PACS@h:0", "CLEFTSCORE_DESTINATIONS: destination 'PACS@h:0': the port must be 1-65535, got 0"),
    ("CLEFTSCORE_DESTINATIONS", "PACS@h:70000",
     "CLEFTSCORE_DESTINATIONS: destination 'PACS@h:70000': the port must be 1-65535, got 70000"),
    ("CLEFTSCORE_TIMEZONE", "Mars/Olympus", "CLEFTSCORE_TIMEZONE: 'Mars/Olympus' is not an IANA time zone name"),
    ("CLEFTSCORE_MODE", "turbo", "CLEFTSCORE_MODE: 'turbo' must be 'paper' or 'fast'"),
    ("CLEFTSCORE_DEVICE", "tpu", "CLEFTSCORE_DEVICE: 'tpu' must be auto, cpu, cuda or cuda:N"),
    ("CLEFTSCORE_PORT", "eleven", "CLEFTSCORE_PORT: 'eleven' is not a whole number"),
    ("CLEFTSCORE_PORT", "70000", "CLEFTSCORE_PORT: must be at most 65535, got 70000"),
    ("CLEFTSCORE_AE_TITLE", "THIS_IS_FAR_TOO_LONG", "CLEFTSCORE_AE_TITLE: AE title 'THIS_IS_FAR_TOO_LONG' is longer than"),
    ("CLEFTSCORE_BIND_ADDRESS", "localhost", "CLEFTSCORE_BIND_ADDRESS: 'localhost' is not an IP address"),
    ("CLEFTSCORE_INVERSION_STEPS", "0", "CLEFTSCORE_INVERSION_STEPS: must be at least 1, got 0"),
    ("CLEFTSCORE_ADAPTATION_STEPS", "0", "CLEFTSCORE_ADAPTATION_STEPS: must be at least 1, got 0"),
    ("CLEFTSCORE_REPEATS", "0", "CLEFTSCORE_REPEATS: must be at least 1, got 0"),
    ("CLEFTSCORE_REPEATS", "three", "CLEFTSCORE_REPEATS: 'three' is not a whole number"),
    ("CLEFTSCORE_WORKERS", "1.5", "CLEFTSCORE_WORKERS: '1.5' is not a whole number"),
    ("CLEFTSCORE_STORAGE_RESERVE_MB", "-1", "CLEFTSCORE_STORAGE_RESERVE_MB: must be at least 0, got -1"),
    ("CLEFTSCORE_UID_ROOT", "1.2.abc.", "CLEFTSCORE_UID_ROOT: UID root '1.2.abc.' must be numbers"),
    ("CLEFTSCORE_UID_ROOT", "1.2.3", "CLEFTSCORE_UID_ROOT: UID root must be a str ending in '.'"),
    ("CLEFTSCORE_BUNDLE", "../elsewhere", "CLEFTSCORE_BUNDLE: bundle name '../elsewhere' must be"),
    ("CLEFTSCORE_LOG_LEVEL", "loud", "CLEFTSCORE_LOG_LEVEL: 'LOUD' must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("CLEFTSCORE_DEMO", "perhaps", "CLEFTSCORE_DEMO: 'perhaps' is not a yes/no value"),
    ("CLEFTSCORE_TLS_CERTIFICATE", "/nonexistent/cert.pem", "CLEFTSCORE_TLS_CERTIFICATE: '/nonexistent/cert.pem' is not a readable file"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_SETTINGS, ids=[f"{n}={v}" for n, v, _ in BAD_SETTINGS])
def test_invalid_settings_name_the_variable(name, value, message):
    with pytest.raises(ConfigError) as caught:
        load_config({name: value})
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text


@pytest.mark.parametrize(("name", "value", "message"), BAD_SETTINGS, ids=[f"{n}={v}" for n, v, _ in BAD_SETTINGS])
def test_cleftscore_config_refuses_with_one_line_and_exit_2(name, value, message, monkeypatch, capsys, tmp_path):
    for key in [k for k in os.environ if k.startswith("CLEFTSCORE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CLEFTSCORE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(name, value)
    assert main(["config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"cleftscore: {message}") and captured.err.count("\n") == 1, captured.err


def test_cleftscore_config_as_a_process_prints_no_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CLEFTSCORE_DATA_DIR": str(tmp_path), "CLEFTSCORE_JOB_MAX_ATTEMPTS": "0"}
    result = subprocess.run(CLI + ["config"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr == "cleftscore: CLEFTSCORE_JOB_MAX_ATTEMPTS: must be at least 1, got 0\n"
    env.update(CLEFTSCORE_JOB_MAX_ATTEMPTS="1", CLEFTSCORE_DESTINATIONS="PACS@[::1]:104",
               CLEFTSCORE_DATABASE_URL="postgresql+psycopg2://svc:s3cret@db/cleft")
    result = subprocess.run(CLI + ["config"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["destinations"] == ["PACS@[::1]:104"] and "s3cret" not in result.stdout


def test_several_bad_settings_share_one_line():
    with pytest.raises(ConfigError) as caught:
        load_config({"CLEFTSCORE_SEND_MAX_ATTEMPTS": "0", "CLEFTSCORE_JOB_LEASE_S": "0"})
    assert str(caught.value) == ("CLEFTSCORE_SEND_MAX_ATTEMPTS: must be at least 1, got 0; "
                                 "CLEFTSCORE_JOB_LEASE_S: must be more than 0, got 0")


def test_command_line_overrides_are_validated_and_named_by_their_option(tmp_path):
    assert load_config({"CLEFTSCORE_INVERSION_STEPS": "300"}, {"inversion_steps": 7}).inversion_steps == 7
    with pytest.raises(ConfigError, match=r"^--steps: must be at least 1, got 0$"):
        load_config({}, {"inversion_steps": 0}, options={"inversion_steps": "--steps"})
    with pytest.raises(ConfigError, match=r"^command-line option port: must be at most 65535, got 70000$"):
        load_config({}, {"port": 70000})
    with pytest.raises(TypeError, match="unknown settings"):
        load_config({}, {"prot": 1})


def test_tls_settings_are_checked_together(tmp_path):
    pem = tmp_path / "not-a-certificate.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="TLS needs both CLEFTSCORE_TLS_CERTIFICATE and CLEFTSCORE_TLS_PRIVATE_KEY"):
        load_config({"CLEFTSCORE_TLS_CERTIFICATE": str(pem)})
    with pytest.raises(ConfigError, match="^CLEFTSCORE_TLS_CLIENT_CA: client certificates need server TLS"):
        load_config({"CLEFTSCORE_TLS_CLIENT_CA": str(pem)})
    with pytest.raises(ConfigError, match="^CLEFTSCORE_TLS_CERTIFICATE: TLS files .* cannot be loaded"):
        load_config({"CLEFTSCORE_TLS_CERTIFICATE": str(pem), "CLEFTSCORE_TLS_PRIVATE_KEY": str(pem)})
    assert load_config({"CLEFTSCORE_TLS_CERTIFICATE": "", "CLEFTSCORE_TLS_PRIVATE_KEY": ""}).tls_server() is None
