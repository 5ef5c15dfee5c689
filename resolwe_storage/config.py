"""Loading and validating the configuration (SPEC §4).

The ``connectors:`` mapping has exactly the shape of the original
``STORAGE_CONNECTORS`` setting. Files may be YAML, TOML or JSON. Every error
names the key path and what was expected, and is raised before any work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit

from catalog.database import DATABASE_SCHEMES, redact_url
from connectors.registry import ALIASES, GCS, LOCAL, S3, connector_kind
from resolwe_storage.errors import ConfigError
from scheduler.rules import (
    DEFAULT_MAX_DELETE_BYTES_PER_SCAN,
    DEFAULT_MAX_DELETES_PER_SCAN,
    DEFAULT_MAX_REMOVALS_PER_SCAN,
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

# -- the checks -------------------------------------------------------------
#
# Each settings class names its keys (``_Key``): the check, the default, and
# the key in the document where it differs from the attribute. They are
# checked here rather than by a validation library: every command validates
# the configuration first, and pydantic's import and model building were
# about 90 ms of each command's start-up (``benchmarks/bench_startup.py``),
# more than half of what ``status`` takes. Every problem is collected, in
# the order of the fields and then of the unknown keys; the first is named.

#: A problem: the key path (document keys) and what was expected.
Problem = tuple[tuple[Any, ...], str]
#: A check: the value and its key path, problems appended; the checked value.
Check = Callable[[Any, tuple[Any, ...], list[Problem]], Any]

_Settings = TypeVar("_Settings")
#: The default of a key that must be given.
_REQUIRED: Any = object()


def _shown(value: Any) -> str:
    return "a mapping" if isinstance(value, dict) else repr(value)


def _integer(minimum: int | None = None) -> Check:
    def check(value: Any, path: tuple[Any, ...], problems: list[Problem]) -> Any:
        if type(value) is not int:  # a bool is not a number of days
            problems.append((path, f"expected an integer, got {_shown(value)}"))
        elif minimum is not None and value < minimum:
            problems.append((path, f"expected an integer >= {minimum}, got {_shown(value)}"))
        return value

    return check


def _string(value: Any, path: tuple[Any, ...], problems: list[Problem]) -> Any:
    if type(value) is not str:
        problems.append((path, f"expected a string, got {_shown(value)}"))
    return value


def _boolean(value: Any, path: tuple[Any, ...], problems: list[Problem]) -> Any:
    if type(value) is not bool:
        problems.append((path, f"expected true or false, got {_shown(value)}"))
    return value


def _anything(value: Any, path: tuple[Any, ...], problems: list[Problem]) -> Any:
    return value


def _optional(check: Check) -> Check:
    def optional(value: Any, path: tuple[Any, ...], problems: list[Problem]) -> Any:
        return None if value is None else check(value, path, problems)

    return optional


def _rule_settings(check: Check) -> Check:
    """A copy or delete rule: an empty mapping is no rule, as in the original.

    Resolwe's storage manager asks ``len(rules) > 0`` before anything else,
    so a block pasted in with ``delete: {}`` deletes nothing; taken as a
    rule it would be one of delay 0, deleting every copy it could at once.
    """

    def rule(value: Any, path: tuple[Any, ...], problems: list[Problem]) -> Any:
        return None if value is None or value == {} else check(value, path, problems)

    return rule


def _mapping(check: Check) -> Check:
    """A mapping of strings to what ``check`` accepts."""

    def mapping(value: Any, path: tuple[Any, ...], problems: list[Problem]) -> Any:
        if not isinstance(value, dict):
            problems.append((path, f"expected a mapping, got {_shown(value)}"))
            return {}
        checked = {}
        for key, item in value.items():
            if type(key) is not str:
                problems.append(((*path, key), f"expected a string key, got {key!r}"))
            checked[key] = check(item, (*path, key), problems)
        return checked

    return mapping


def _settings(cls: type[_Settings]) -> Check:
    """A mapping checked as the keys of ``cls`` (a ``_Checked``); unknown keys refused."""

    def settings(value: Any, path: tuple[Any, ...], problems: list[Problem]) -> Any:
        if not isinstance(value, dict):
            problems.append((path, f"expected a mapping, got {_shown(value)}"))
            return None
        before = len(problems)
        values = {}
        for spec in cls._keys:  # type: ignore[attr-defined]
            if spec.key in value:
                values[spec.name] = spec.check(value[spec.key], (*path, spec.key), problems)
            elif spec.default is _REQUIRED:
                problems.append(((*path, spec.key), "required key is missing"))
        known = cls._known  # type: ignore[attr-defined]
        for key in value:
            if key not in known:
                problems.append(((*path, key), "unknown key"))
        return cls(**values) if len(problems) == before else None

    return settings


class _Key:
    """One key of a settings class: its check, its default, its name in the document."""

    def __init__(self, check: Check, default: Any = _REQUIRED, *, key: str | None = None) -> None:
        self.check, self.default, self.key, self.name = check, default, key or "", ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.key = self.key or name


class _Checked:
    """Settings: read-only attributes, one per ``_Key`` of the class and its bases.

    Plain classes rather than dataclasses, whose generated methods cost a
    millisecond a class at every start-up.
    """

    _keys: tuple[_Key, ...] = ()
    _known: frozenset[str] = frozenset()

    def __init_subclass__(cls) -> None:
        own = tuple(value for value in vars(cls).values() if isinstance(value, _Key))
        cls._keys = (*cls._keys, *own)
        cls._known = frozenset(spec.key for spec in cls._keys)

    def __init__(self, **values: Any) -> None:
        for spec in self._keys:
            value = values.pop(spec.name, spec.default)
            if value is _REQUIRED:
                raise TypeError(f"{type(self).__name__}: {spec.name} is required")
            object.__setattr__(self, spec.name, {} if value is _EMPTY else value)
        if values:
            raise TypeError(f"{type(self).__name__}: unknown {', '.join(sorted(values))}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, s.name) == getattr(other, s.name) for s in self._keys)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{s.name}={getattr(self, s.name)!r}" for s in self._keys)
        return f"{type(self).__name__}({shown})"

    def replace(self: _Settings, **changes: Any) -> _Settings:
        """A copy with ``changes``."""
        values = {s.name: getattr(self, s.name) for s in self._keys}  # type: ignore[attr-defined]
        return type(self)(**{**values, **changes})


#: The default of a mapping key: a new empty mapping for each instance.
_EMPTY: Any = object()


def check_settings(cls: type[_Settings], value: Any, *, path: tuple[Any, ...] = ()) -> _Settings:
    """``value`` as ``cls``; ConfigError naming the first problem's key path and the count."""
    problems: list[Problem] = []
    checked = _settings(cls)(value, path, problems)
    if problems:
        where, message = problems[0]
        shown = ".".join(str(part) for part in where) or "(top level)"
        more = len(problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{shown}: {message}{tail}")
    return checked  # type: ignore[no-any-return]


_DAYS = _optional(_integer())
_NON_NEGATIVE = _optional(_integer(0))
_POSITIVE = _optional(_integer(1))
_TEXT = _optional(_string)

# -- the settings -------------------------------------------------------------


class CopyOverride(_Checked):
    delay: int | None = _Key(_DAYS, None)


class DeleteOverride(_Checked):
    delay: int | None = _Key(_DAYS, None)
    min_other_copies: int | None = _Key(_NON_NEGATIVE, None)


class CopyRuleSettings(_Checked):
    delay: int | None = _Key(_DAYS, None)
    data_slug: dict[str, CopyOverride] = _Key(_mapping(_settings(CopyOverride)), _EMPTY)
    process_type: dict[str, CopyOverride] = _Key(_mapping(_settings(CopyOverride)), _EMPTY)


class DeleteRuleSettings(_Checked):
    delay: int | None = _Key(_DAYS, None)
    min_other_copies: int | None = _Key(_NON_NEGATIVE, None)
    #: ``null``: no cap.
    max_per_scan: int | None = _Key(_NON_NEGATIVE, DEFAULT_MAX_DELETES_PER_SCAN)
    max_bytes_per_scan: int | None = _Key(_NON_NEGATIVE, DEFAULT_MAX_DELETE_BYTES_PER_SCAN)
    data_slug: dict[str, DeleteOverride] = _Key(_mapping(_settings(DeleteOverride)), _EMPTY)
    process_type: dict[str, DeleteOverride] = _Key(_mapping(_settings(DeleteOverride)), _EMPTY)


class VerifyRuleSettings(_Checked):
    interval: int = _Key(_integer(1))


class _ConnectorSettings(_Checked):
    priority: int = _Key(_integer(), DEFAULT_PRIORITY)
    copy_rule: CopyRuleSettings | None = _Key(
        _rule_settings(_settings(CopyRuleSettings)), None, key="copy"
    )
    delete: DeleteRuleSettings | None = _Key(_rule_settings(_settings(DeleteRuleSettings)), None)
    verify: VerifyRuleSettings | None = _Key(_optional(_settings(VerifyRuleSettings)), None)
    audit: VerifyRuleSettings | None = _Key(_optional(_settings(VerifyRuleSettings)), None)


class LocalSettings(_ConnectorSettings):
    path: str = _Key(_string)
    public_url: str | None = _Key(_TEXT, None)
    selinux_label: str | None = _Key(_TEXT, None)
    #: Flush every written file to disk before reporting it copied (ours).
    fsync: bool = _Key(_boolean, True)
    #: Flush the files of one job together, with one ``syncfs`` (ours).
    batch_fsync: bool = _Key(_boolean, True)


class S3Settings(_ConnectorSettings):
    bucket: str = _Key(_string)
    region_name: str | None = _Key(_TEXT, None)
    endpoint_url: str | None = _Key(_TEXT, None)
    credentials: str | None = _Key(_TEXT, None)
    role_arn: str | None = _Key(_TEXT, None)
    multipart_threshold: int | None = _Key(_POSITIVE, None)
    multipart_chunksize: int | None = _Key(_POSITIVE, None)
    max_pool_connections: int | None = _Key(_POSITIVE, None)
    #: Send a CRC32C with every upload (ours); false for stores that reject them.
    upload_checksums: bool = _Key(_boolean, True)
    #: Seconds to connect, and to wait for the next bytes of an answer (ours).
    connect_timeout: int | None = _Key(_POSITIVE, None)
    read_timeout: int | None = _Key(_POSITIVE, None)


class GCSSettings(_ConnectorSettings):
    bucket: str = _Key(_string)
    credentials: str | None = _Key(_TEXT, None)
    endpoint_url: str | None = _Key(_TEXT, None)
    #: Seconds for a request to connect and answer (ours).
    timeout: int | None = _Key(_POSITIVE, None)


SETTINGS_BY_KIND: dict[str, type[_ConnectorSettings]] = {
    LOCAL: LocalSettings,
    S3: S3Settings,
    GCS: GCSSettings,
}


class _ConnectorEntry(_Checked):
    connector: str = _Key(_string)
    config: dict[str, Any] = _Key(_mapping(_anything))


class RemovalSettings(_Checked):
    #: Days after an item's removal that its copies go (negative: never).
    delay: int = _Key(_integer(), 0)
    #: Copies of removed items one scan queues for removal, at most (null: no cap).
    max_per_scan: int | None = _Key(_NON_NEGATIVE, DEFAULT_MAX_REMOVALS_PER_SCAN)


class ResolweSettings(_Checked):
    #: Resolwe's connector names to ours (``import --from-resolwe``); a name
    #: not listed is ours too.
    connectors: dict[str, str] = _Key(_mapping(_string), _EMPTY)


class _Document(_Checked):
    database: str | None = _Key(_TEXT, None)
    broker: str | None = _Key(_TEXT, None)
    removal: RemovalSettings = _Key(_settings(RemovalSettings), RemovalSettings())
    resolwe: ResolweSettings = _Key(_settings(ResolweSettings), ResolweSettings())
    connectors: dict[str, _ConnectorEntry] = _Key(_mapping(_settings(_ConnectorEntry)), _EMPTY)


class ConnectorConfig(NamedTuple):
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
    #: Copies of removed items a scan queues at most (``removal: {max_per_scan}``).
    removal_cap: int | None = DEFAULT_MAX_REMOVALS_PER_SCAN
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


def _raise(where: str, message: str) -> None:
    raise ConfigError(f"{where}: {message}")


# -- loading --------------------------------------------------------------


def parse_text(text: str, *, name: str) -> Any:
    """Parse a YAML, TOML or JSON document; the format is chosen by ``name``'s suffix."""
    suffix = Path(name).suffix.lower()
    if suffix == ".toml":
        import tomllib  # only for TOML, as YAML's below

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{name}: malformed TOML: {exc}") from exc
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
    import yaml  # only for YAML: its import is a tenth of a command's start-up

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{name}: malformed YAML{where}: {problem}") from exc


def _check_url(where: str, key: str, url: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- read to check it: a port that is no number raises
    except ValueError:  # an unclosed [, a port out of range or not a number
        # Not the error's text: it may quote the netloc, password and all.
        _raise(where, f"{key}: not a well-formed URL")
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        expected = " or ".join(f"{s}://" for s in schemes)
        got = f"scheme {scheme!r}" if scheme else "no scheme"
        _raise(where, f"{key}: expected a {expected} URL, got {got}")
    if scheme.startswith("redis") and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        # redis-py would ignore it and use database 0: another service's, perhaps.
        _raise(where, f"{key}: the path of a redis:// URL is a database number, like /0")


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
        parsed = check_settings(_Document, document)
    except ConfigError as exc:
        _raise(source, str(exc))

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
            settings = check_settings(
                SETTINGS_BY_KIND[kind], entry.config, path=("connectors", name, "config")
            )
        except ConfigError as exc:
            _raise(source, str(exc))
        settings = _resolve_paths(settings, base_dir)
        connectors[name] = ConnectorConfig(name=name, kind=kind, settings=settings)  # type: ignore[arg-type]

    _check_own_storage(source, connectors)
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
        removal_cap=parsed.removal.max_per_scan,
        resolwe_connectors=dict(parsed.resolwe.connectors),
    )


def _check_own_storage(source: str, connectors: Mapping[str, ConnectorConfig]) -> None:
    """Refuse two connectors that reach the same storage: each must hold its copies alone.

    A delete from one connector counts on the copies on the others, confirmed
    on their backends; two connectors on one folder (or one inside the
    other's), or on one bucket at one endpoint, hold the same bytes under two
    names, and a delete from either removes the copy it counted on. Paths are
    compared as written (made absolute): start-up touches no storage, so a
    link between two roots is not seen here.
    """
    claimed: list[tuple[str, str, str, str | None]] = []  # connector, kind, place, endpoint
    for name, connector in connectors.items():
        settings: Any = connector.settings
        if connector.kind == LOCAL:
            key, place, endpoint = "path", os.path.normpath(os.path.abspath(settings.path)), None
        else:
            key, place, endpoint = "bucket", settings.bucket, settings.endpoint_url
        for other, kind, theirs, their_endpoint in claimed:
            if kind != connector.kind or endpoint != their_endpoint:
                continue
            if connector.kind == LOCAL:
                shared = place == theirs or _holds(theirs, place) or _holds(place, theirs)
                what = f"{place!r} is, or is inside or around, the folder of connector {other!r}"
            else:
                shared = place == theirs
                what = f"{place!r} is the bucket of connector {other!r} too"
            if shared:
                _raise(
                    source,
                    f"connectors.{name}.config.{key}: {what}; connectors must not share "
                    "storage (a delete from one would remove the other's copies)",
                )
        claimed.append((name, connector.kind, place, endpoint))


def _holds(folder: str, path: str) -> bool:
    """Whether ``path`` lies inside ``folder`` (both absolute and normal)."""
    return path.startswith(folder.rstrip(os.sep) + os.sep)


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
    return settings.replace(**changes) if changes else settings


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
