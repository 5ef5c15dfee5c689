"""Loading and validating the configuration (SPEC §4).

The ``connectors:`` mapping has exactly the shape of the original
``STORAGE_CONNECTORS`` setting. Files may be YAML, TOML or JSON. Every error
names the key path and what was expected, and is raised before any work.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from catalog.database import DATABASE_SCHEMES, redact_url
from connectors.registry import ALIASES, GCS, LOCAL, S3, connector_kind
from resolwe_storage.errors import ConfigError
from scheduler.rules import (
    DEFAULT_MAX_DELETE_BYTES_PER_SCAN,
    DEFAULT_MAX_DELETES_PER_SCAN,
    DEFAULT_PRIORITY,
    ConnectorPolicy,
    Override,
    Rule,
    VerifyRule,
)

ENV_CONFIG = "RESOLWE_STORAGE_CONFIG"
ENV_DATABASE = "RESOLWE_STORAGE_DATABASE"
ENV_BROKER = "RESOLWE_STORAGE_BROKER"

#: The embedded default catalog: a SQLite file in the working directory.
DEFAULT_DATABASE = "sqlite:///resolwe-storage.sqlite3"

Days = Annotated[StrictInt, Field(description="days")]
NonNegative = Annotated[StrictInt, Field(ge=0)]
Positive = Annotated[StrictInt, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CopyOverride(_Strict):
    delay: Days | None = None


class DeleteOverride(_Strict):
    delay: Days | None = None
    min_other_copies: NonNegative | None = None


class CopyRuleSettings(_Strict):
    delay: Days | None = None
    data_slug: dict[StrictStr, CopyOverride] = {}
    process_type: dict[StrictStr, CopyOverride] = {}


class DeleteRuleSettings(_Strict):
    delay: Days | None = None
    min_other_copies: NonNegative | None = None
    #: ``null``: no cap.
    max_per_scan: NonNegative | None = DEFAULT_MAX_DELETES_PER_SCAN
    max_bytes_per_scan: NonNegative | None = DEFAULT_MAX_DELETE_BYTES_PER_SCAN
    data_slug: dict[StrictStr, DeleteOverride] = {}
    process_type: dict[StrictStr, DeleteOverride] = {}


class VerifyRuleSettings(_Strict):
    interval: Positive


class _ConnectorSettings(_Strict):
    priority: StrictInt = DEFAULT_PRIORITY
    copy_rule: CopyRuleSettings | None = Field(default=None, alias="copy")
    delete: DeleteRuleSettings | None = None
    verify: VerifyRuleSettings | None = None
    audit: VerifyRuleSettings | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LocalSettings(_ConnectorSettings):
    path: StrictStr
    public_url: StrictStr | None = None
    selinux_label: StrictStr | None = None
    #: Flush every written file to disk before reporting it copied (ours).
    fsync: StrictBool = True
    #: Flush the files of one job together, with one ``syncfs`` (ours).
    batch_fsync: StrictBool = True


class S3Settings(_ConnectorSettings):
    bucket: StrictStr
    region_name: StrictStr | None = None
    endpoint_url: StrictStr | None = None
    credentials: StrictStr | None = None
    role_arn: StrictStr | None = None
    multipart_threshold: Positive | None = None
    multipart_chunksize: Positive | None = None
    max_pool_connections: Positive | None = None
    #: Send a CRC32C with every upload (ours); false for stores that reject them.
    upload_checksums: StrictBool = True
    #: Seconds to connect, and to wait for the next bytes of an answer (ours).
    connect_timeout: Positive | None = None
    read_timeout: Positive | None = None


class GCSSettings(_ConnectorSettings):
    bucket: StrictStr
    credentials: StrictStr | None = None
    endpoint_url: StrictStr | None = None
    #: Seconds for a request to connect and answer (ours).
    timeout: Positive | None = None


SETTINGS_BY_KIND: dict[str, type[_ConnectorSettings]] = {
    LOCAL: LocalSettings,
    S3: S3Settings,
    GCS: GCSSettings,
}


class _ConnectorEntry(_Strict):
    connector: StrictStr
    config: dict[StrictStr, Any]


class RemovalSettings(_Strict):
    #: Days after an item's removal that its copies go (negative: never).
    delay: Days = 0


class ResolweSettings(_Strict):
    #: Resolwe's connector names to ours (``import --from-resolwe``); a name
    #: not listed is ours too.
    connectors: dict[StrictStr, StrictStr] = {}


class _Document(_Strict):
    database: StrictStr | None = None
    broker: StrictStr | None = None
    removal: RemovalSettings = RemovalSettings()
    resolwe: ResolweSettings = ResolweSettings()
    connectors: dict[StrictStr, _ConnectorEntry] = {}


@dataclass(frozen=True)
class ConnectorConfig:
    """One configured connector: its name, kind and validated settings."""

    name: str
    kind: Literal["local", "s3", "gcs"]
    settings: _ConnectorSettings

    @property
    def policy(self) -> ConnectorPolicy:
        """The connector's rules, as the planner reads them."""
        s = self.settings
        return ConnectorPolicy(
            name=self.name,
            priority=s.priority,
            copy=_rule(s.copy_rule),
            delete=_rule(s.delete),
            verify=VerifyRule(s.verify.interval) if s.verify else None,
            audit=VerifyRule(s.audit.interval) if s.audit else None,
        )


@dataclass(frozen=True)
class Config:
    """The validated configuration of one process."""

    database: str = DEFAULT_DATABASE
    broker: str | None = None
    connectors: Mapping[str, ConnectorConfig] = field(default_factory=dict)
    source: str | None = None
    #: Days after an item's removal that its copies go (``removal: {delay}``).
    removal_delay: int = 0
    #: Resolwe's connector names to ours (``resolwe: {connectors}``).
    resolwe_connectors: Mapping[str, str] = field(default_factory=dict)

    @property
    def policies(self) -> dict[str, ConnectorPolicy]:
        """Every connector's rules, by connector name."""
        return {name: connector.policy for name, connector in self.connectors.items()}

    def __repr__(self) -> str:
        # URLs may carry passwords: never shown, not even in a traceback.
        broker = redact_url(self.broker) if self.broker else None
        return (
            f"Config(database={redact_url(self.database)!r}, broker={broker!r}, "
            f"connectors={sorted(self.connectors)!r}, source={self.source!r})"
        )


def _rule(settings: CopyRuleSettings | DeleteRuleSettings | None) -> Rule | None:
    if settings is None:
        return None

    def override(value: CopyOverride | DeleteOverride) -> Override:
        return Override(
            delay=value.delay, min_other_copies=getattr(value, "min_other_copies", None)
        )

    return Rule(
        delay=settings.delay,
        min_other_copies=getattr(settings, "min_other_copies", None),
        data_slug={key: override(value) for key, value in settings.data_slug.items()},
        process_type={key: override(value) for key, value in settings.process_type.items()},
        max_per_scan=getattr(settings, "max_per_scan", None),
        max_bytes_per_scan=getattr(settings, "max_bytes_per_scan", None),
    )


# -- errors ---------------------------------------------------------------


def _describe(error: Mapping[str, Any]) -> str:
    """What was expected, in a few words, for one pydantic error."""
    kind = error["type"]
    given = error.get("input")
    shown = repr(given) if not isinstance(given, dict) else "a mapping"
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {shown}"
    if kind in ("string_type",):
        return f"expected a string, got {shown}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {shown}"
    if kind == "greater_than_equal":
        return f"expected an integer >= {ctx.get('ge')}, got {shown}"
    return f"{error['msg']}, got {shown}"


def _first_error(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> tuple[str, int]:
    errors = exc.errors()
    first = errors[0]
    aliases = {"copy_rule": "copy"}
    path = ".".join(str(aliases.get(str(part), part)) for part in (*prefix, *first["loc"]))
    return f"{path or '(top level)'}: {_describe(first)}", len(errors) - 1


def _raise(where: str, message: str, more: int = 0) -> None:
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    raise ConfigError(f"{where}: {message}{tail}")


# -- loading --------------------------------------------------------------


def parse_text(text: str, *, name: str) -> Any:
    """Parse a YAML, TOML or JSON document; the format is chosen by ``name``'s suffix."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: malformed TOML: {exc}") from exc
    import yaml  # only for YAML: its import is a tenth of a command's start-up

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{name}: malformed YAML{where}: {problem}") from exc


def _check_url(where: str, key: str, url: str, schemes: tuple[str, ...]) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in schemes:
        expected = " or ".join(f"{s}://" for s in schemes)
        got = f"scheme {scheme!r}" if scheme else "no scheme"
        _raise(where, f"{key}: expected a {expected} URL, got {got}")


def build_config(
    document: Any,
    *,
    source: str = "configuration",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a parsed document and apply environment overrides.

    Relative file paths inside connector settings (``path``, ``credentials``)
    are taken relative to ``base_dir`` (the configuration file's folder).
    """
    environ = os.environ if environ is None else environ
    if document is None:
        document = {}
    if not isinstance(document, dict):
        _raise(source, f"expected a mapping at the top level, got {type(document).__name__}")
    try:
        parsed = _Document.model_validate(document)
    except ValidationError as exc:
        _raise(source, *_first_error(exc))

    connectors: dict[str, ConnectorConfig] = {}
    for name, entry in parsed.connectors.items():
        kind = connector_kind(entry.connector)
        if kind is None:
            known = ", ".join(sorted(k for k in ALIASES if "." not in k))
            _raise(
                source,
                f"connectors.{name}.connector: unknown connector {entry.connector!r}; "
                f"expected one of {known} or an original Resolwe class path",
            )
        try:
            settings = SETTINGS_BY_KIND[kind].model_validate(entry.config)
        except ValidationError as exc:
            _raise(source, *_first_error(exc, ("connectors", name, "config")))
        settings = _resolve_paths(settings, base_dir)
        connectors[name] = ConnectorConfig(name=name, kind=kind, settings=settings)  # type: ignore[arg-type]

    database = environ.get(ENV_DATABASE) or parsed.database or DEFAULT_DATABASE
    broker = environ.get(ENV_BROKER) or parsed.broker
    origin = ENV_DATABASE if environ.get(ENV_DATABASE) else "database"
    _check_url(source, origin, database, DATABASE_SCHEMES)
    if broker is not None:
        origin = ENV_BROKER if environ.get(ENV_BROKER) else "broker"
        _check_url(source, origin, broker, ("redis", "rediss"))
    for theirs, ours in parsed.resolwe.connectors.items():
        if ours not in connectors:
            named = ", ".join(sorted(connectors)) or "none"
            _raise(
                source,
                f"resolwe.connectors.{theirs}: {ours!r} is not a configured connector "
                f"(configured: {named})",
            )
    return Config(
        database=database,
        broker=broker,
        connectors=connectors,
        source=source,
        removal_delay=parsed.removal.delay,
        resolwe_connectors=dict(parsed.resolwe.connectors),
    )


def _resolve_paths(settings: _ConnectorSettings, base_dir: Path | None) -> _ConnectorSettings:
    """File paths in ``settings`` with ``~`` expanded and relative ones under ``base_dir``."""
    changes: dict[str, str] = {}
    for key in ("path", "credentials"):
        value = getattr(settings, key, None)
        if not value:
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = (base_dir / path).resolve()
        if str(path) != value:
            changes[key] = str(path)
    return settings.model_copy(update=changes) if changes else settings


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the configuration from ``path``, else ``$RESOLWE_STORAGE_CONFIG``, else defaults."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(ENV_CONFIG) or None
    if path is None:
        return build_config({}, source="defaults", environ=environ)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(file)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {str(file)!r} is a directory") from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration file {str(file)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {str(file)!r}: {exc.strerror}") from None
    document = parse_text(text, name=str(file))
    return build_config(document, source=str(file), base_dir=file.parent.resolve(), environ=environ)
