"""Service configuration: environment variables, JSON file, validation, redaction."""

from __future__ import annotations

import json

import pytest

from service.config.settings import ConfigError, load_config, parse_destination


def test_defaults_are_embedded_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config({})
    assert config.ae_title == "CLEFTSCORE" and config.port == 11112
    assert config.data_dir == tmp_path / "data"
    assert config.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'cleftscore.db'}"
    assert config.inversion_steps == 2000 and config.adaptation_steps == 50


def test_environment_variables(tmp_path):
    env = {
        "CLEFTSCORE_AE_TITLE": "CLEFT1", "CLEFTSCORE_PORT": "4242", "CLEFTSCORE_DATA_DIR": str(tmp_path),
        "CLEFTSCORE_DATABASE_URL": "postgresql+psycopg2://svc:s3cret@db.example:5432/cleft",
        "CLEFTSCORE_DESTINATIONS": "PACS@10.0.0.5:104, ARCHIVE@[::1]:11113",
        "CLEFTSCORE_ALLOWED_AES": "MODALITY,PACS", "CLEFTSCORE_INVERSION_STEPS": "300",
        "CLEFTSCORE_ADAPTATION_STEPS": "10", "CLEFTSCORE_DEVICE": "cuda:0", "CLEFTSCORE_BUNDLE": "ffhq",
    }
    config = load_config(env)
    assert config.ae_title == "CLEFT1" and config.port == 4242 and config.data_dir == tmp_path
    assert [str(d) for d in config.destinations] == ["PACS@10.0.0.5:104", "ARCHIVE@::1:11113"]
    assert config.allowed_aes == ("MODALITY", "PACS")
    assert (config.inversion_steps, config.adaptation_steps, config.device, config.bundle) == (300, 10, "cuda:0", "ffhq")
    view = config.public_view()
    assert "s3cret" not in json.dumps(view) and view["database_url"].startswith("postgresql+psycopg2://svc:***@")


def test_file_then_environment_then_overrides(tmp_path):
    file = tmp_path / "cleftscore.json"
    file.write_text(json.dumps({"port": 2000, "ae_title": "FROMFILE", "workers": 2}))
    config = load_config({"CLEFTSCORE_CONFIG_FILE": str(file), "CLEFTSCORE_PORT": "3000"}, {"workers": 3})
    assert (config.ae_title, config.port, config.workers) == ("FROMFILE", 3000, 3)
    file.write_text(json.dumps({"prot": 1}))
    with pytest.raises(ConfigError, match="unknown settings"):
        load_config({"CLEFTSCORE_CONFIG_FILE": str(file)})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CLEFTSCORE_PORT", "eleven", "CLEFTSCORE_PORT='eleven' is not valid"),
    ("CLEFTSCORE_PORT", "70000", "CLEFTSCORE_PORT: 70000 is out of range"),
    ("CLEFTSCORE_AE_TITLE", "THIS_IS_FAR_TOO_LONG", "CLEFTSCORE_AE_TITLE"),
    ("CLEFTSCORE_DESTINATIONS", "PACS:104", "must look like AE@host:port"),
    ("CLEFTSCORE_DEVICE", "tpu", "CLEFTSCORE_DEVICE"),
    ("CLEFTSCORE_INVERSION_STEPS", "0", "at least 1"),
    ("CLEFTSCORE_UID_ROOT", "1.2.abc.", "CLEFTSCORE_UID_ROOT"),
    ("CLEFTSCORE_TLS_CERTIFICATE", "/tmp/cert.pem", "needs both"),
])
def test_invalid_settings_name_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", ".")):
        load_config({name: value})


def test_parse_destination():
    destination = parse_destination("ORTHANC@localhost:4242")
    assert (destination.ae_title, destination.host, destination.port) == ("ORTHANC", "localhost", 4242)
    with pytest.raises(ConfigError):
        parse_destination("@host:1")
