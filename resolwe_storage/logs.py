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
from datetime import UTC, datetime

#: What ``--log-format`` takes.
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
#: Libraries whose debug lines carry secrets (botocore's: every signature, the
#: presigned URLs' included, and STS's answers with the role's session keys):
#: at ``debug`` they still log from ``info`` up only.
SECRET_DEBUG_LOGGERS = ("botocore", "boto3", "s3transfer")


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
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root.addHandler(handler)
