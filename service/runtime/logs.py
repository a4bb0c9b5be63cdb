"""Structured (JSON lines) logging for the service, with patient data scrubbed from every line.

Records carry ids (job, photo, appraisal, transfer, SOP Instance UID) passed as
``extra``; our own messages never name patients. Third-party libraries do not keep to
that: pydicom's warnings quote element values (a corrupted UID element whose length
swallowed the next elements quotes the patient's name with it), and exception texts
quote what they choke on. So every line goes through :func:`scrub` on its way out:
quoted literals (``'…'``, ``"…"``, ``b'…'``), in the message, in string fields and in
tracebacks, are replaced by their length unless they are a UID or a number. Python
warnings are routed into this log (``logging.captureWarnings``) so they are scrubbed
too. Configured once by ``cleftscore serve`` (never at import time).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
#: A quoted literal as repr() writes it: opening quote not preceded by a letter (so the
#: apostrophe in "photo's" opens nothing), escapes honoured, closing quote not followed by one.
_QUOTED = re.compile(r"""(?<![A-Za-z0-9])(b?)(['"])((?:\\.|(?!\2)[^\\\n])*)\2(?![A-Za-z])""")
_HARMLESS = re.compile(r"[0-9.+\-eE]*")
#: Longest message kept (characters); a 65k-character value must not become a 65k-character line.
MAX_MESSAGE_CHARS = 2000


def scrub(text: str) -> str:
    """``text`` with every quoted literal that is not a UID or a number replaced by ``'<N chars>'``."""

    def replace(match: re.Match) -> str:
        prefix, quote, body = match.groups()
        if _HARMLESS.fullmatch(body):
            return match.group(0)
        return f"{prefix}{quote}<{len(body)} chars>{quote}"

    text = _QUOTED.sub(replace, str(text))
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + f"… ({len(text) - MAX_MESSAGE_CHARS} more characters)"
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                if isinstance(value, str):
                    entry[key] = scrub(value)
                elif isinstance(value, (int, float, bool, type(None))):
                    entry[key] = value
                else:
                    entry[key] = scrub(str(value))
        if record.exc_info:
            entry["exception"] = scrub_traceback(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def scrub_traceback(text: str) -> str:
    """A traceback with each line scrubbed (the frames stay readable; quoted values go)."""
    return "\n".join(scrub(line) for line in text.splitlines())


def configure_logging(level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python warnings (pydicom, PIL, highdicom warn about malformed input) become log records,
    # so they are scrubbed like everything else instead of going to stderr verbatim.
    logging.captureWarnings(True)
    # pynetdicom logs every PDU at INFO, with patient attributes in dataset dumps at DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    # pydicom both warns and logs each problem; the warning (captured above) is enough.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    logging.getLogger("PIL").setLevel(logging.WARNING)
