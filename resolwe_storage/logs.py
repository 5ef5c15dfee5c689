"""How the processes log: a line of text per record, or a JSON object per line for collectors.

``--log-format json`` (or ``RESOLWE_STORAGE_LOG_FORMAT=json``) writes one
object per line with ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``process``, ``message``, an ``error`` with the traceback where there is
one, and the fields of a job's line (``workers.telemetry``) under ``job``, a scan's
under ``scan``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

#: What ``--log-format`` takes.
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
#: Libraries whose debug lines carry secrets (botocore's: every signature, the
#: presigned URLs' included, and STS's answers with the role's session keys):
#: at ``debug`` they still log from ``info`` up only.
SECRET_DEBUG_LOGGERS = ("botocore", "boto3", "s3transfer")


#: C0 and C1 control characters: a terminal acts on them (ESC opens sequences that
#: clear the screen, retitle the window, write the clipboard; CR overwrites a line).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, *, keep: str = "") -> str:
    """``text`` for a terminal: control characters but those in ``keep`` as Python escapes.

    For what producers and backends wrote (file paths, error texts, lock
    reasons), so that none of it is a terminal's command.
    """
    return _CONTROL.sub(lambda found: found[0] if found[0] in keep else repr(found[0])[1:-1], text)


class TextFormatter(logging.Formatter):
    """A record as one line of text: its message's control characters escaped.

    A message carries what producers and backends wrote (file paths, error
    texts): a newline in a file name would start a line of its own, forged
    (a log reader would take ``...\n2026-... ERROR ...`` for another
    record), and an ESC sequence would act on the terminal that shows the
    log. A traceback still follows on lines of its own.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, keep="\t")
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for field in ("job", "scan"):
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Ours(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure`` installs (and replaces when called again)."""


def configure(level: str, log_format: str = "text") -> None:
    """Log at ``level`` to stderr, as text or as JSON lines.

    Like ``logging.basicConfig``, it leaves alone a program that set up
    logging itself (a test runner, an application embedding the library):
    then only the level is set.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    for name in SECRET_DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    if any(not isinstance(handler, _Ours) for handler in root.handlers):
        return
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = _Ours()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
