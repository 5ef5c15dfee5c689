"""The configuration file (SPEC §4): three formats, the original's shape, errors naming the key."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from resolwe_storage.config import (
    DEFAULT_DATABASE,
    ENV_BROKER,
    ENV_CONFIG,
    ENV_DATABASE,
    Config,
    build_config,
    load_config,
)
from resolwe_storage.errors import ConfigError, UserError
from scheduler.rules import ConnectorPolicy, Override, Rule, VerifyRule

YAML = """\
database: postgresql://storage@db.example/catalog
broker: redis://127.0.0.1:6379/0
connectors:
  local:
    connector: local
    config:
      priority: 0
      path: /data/local
      public_url: /local_data
      delete: {delay: 2, min_other_copies: 2}
      copy:
        delay: 10
        data_slug: {00hrfastqgz-66: {delay: 0}}
  S3:
    connector: s3
    config:
      priority: 10
      bucket: genialis-test-storage
      region_name: eu-central-1
      endpoint_url: http://127.0.0.1:5055
      credentials: testing_credentials_s3.json
      copy: {delay: 5}
      verify: {interval: 30}
  GCS:
    connector: gcs
    config:
      bucket: genialis-test-storage
      credentials: testing_credentials_gcs.json
      copy: {delay: 2, process_type: {"data:alignment:": {delay: -1}}}
"""

TOML = """\
database = "postgresql://storage@db.example/catalog"
broker = "redis://127.0.0.1:6379/0"

[connectors.local]
connector = "local"

[connectors.local.config]
priority = 0
path = "/data/local"
public_url = "/local_data"
delete = {delay = 2, min_other_copies = 2}

[connectors.local.config.copy]
delay = 10
data_slug = {00hrfastqgz-66 = {delay = 0}}

[connectors.S3]
connector = "s3"

[connectors.S3.config]
priority = 10
bucket = "genialis-test-storage"
region_name = "eu-central-1"
endpoint_url = "http://127.0.0.1:5055"
credentials = "testing_credentials_s3.json"
copy = {delay = 5}
verify = {interval = 30}

[connectors.GCS]
connector = "gcs"

[connectors.GCS.config]
bucket = "genialis-test-storage"
credentials = "testing_credentials_gcs.json"
copy = {delay = 2, process_type = {"data:alignment:" = {delay = -1}}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_yaml_text(folder: Path, text: str, **environ: str) -> Config:
    return load_config(write(folder, "config.yaml", text), environ=environ)


def minimal(**connectors: Any) -> dict[str, Any]:
    return {"connectors": connectors}


def without_source(config: Config) -> Config:
    return dataclasses.replace(config, source=None)


# -- formats ----------------------------------------------------------------------


def test_yaml_toml_and_json_load_to_equal_configurations(tmp_path: Path) -> None:
    as_json = json.dumps(yaml.safe_load(YAML), indent=2)
    configs = [
        load_config(write(tmp_path, name, text), environ={})
        for name, text in (("c.yaml", YAML), ("c.yml", YAML), ("c.toml", TOML), ("c.json", as_json))
    ]
    assert [config.source for config in configs] == [
        str(tmp_path / name) for name in ("c.yaml", "c.yml", "c.toml", "c.json")
    ]
    first = without_source(configs[0])
    assert all(without_source(config) == first for config in configs[1:])


def test_the_loaded_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "c.yaml", YAML), environ={})
    assert config.database == "postgresql://storage@db.example/catalog"
    assert config.broker == "redis://127.0.0.1:6379/0"
    assert list(config.connectors) == ["local", "S3", "GCS"]
    assert {name: c.kind for name, c in config.connectors.items()} == {
        "local": "local",
        "S3": "s3",
        "GCS": "gcs",
    }
    s3 = config.connectors["S3"].settings
    assert (s3.bucket, s3.region_name, s3.endpoint_url) == (  # type: ignore[attr-defined]
        "genialis-test-storage",
        "eu-central-1",
        "http://127.0.0.1:5055",
    )
    assert config.policies == {
        "local": ConnectorPolicy(
            "local",
            priority=0,
            copy=Rule(delay=10, data_slug={"00hrfastqgz-66": Override(delay=0)}),
            # The caps per scan a rule does not name are the defaults.
            delete=Rule(
                delay=2, min_other_copies=2, max_per_scan=1_000, max_bytes_per_scan=1024**4
            ),
        ),
        "S3": ConnectorPolicy("S3", priority=10, copy=Rule(delay=5), verify=VerifyRule(30)),
        "GCS": ConnectorPolicy(
            "GCS",
            priority=100,
            copy=Rule(delay=2, process_type={"data:alignment:": Override(delay=-1)}),
        ),
    }


def test_an_audit_rule_is_read_per_connector() -> None:
    settings = {"path": "/d", "audit": {"interval": 7}}
    config = build_config(minimal(x={"connector": "local", "config": settings}), environ={})
    assert config.policies["x"].audit == VerifyRule(7)
    with pytest.raises(ConfigError, match=r"connectors\.x\.config\.audit\.interval"):
        build_config(
            minimal(x={"connector": "local", "config": {"path": "/d", "audit": {"interval": 0}}}),
            environ={},
        )


def test_caps_on_deletes_per_scan_are_set_or_lifted() -> None:
    def delete_rule(**rule: object) -> Rule | None:
        config = build_config(
            minimal(x={"connector": "local", "config": {"path": "/d", "delete": rule}}),
            environ={},
        )
        return config.policies["x"].delete

    capped = delete_rule(max_per_scan=10, max_bytes_per_scan=2048)
    assert capped is not None and (capped.max_per_scan, capped.max_bytes_per_scan) == (10, 2048)
    lifted = delete_rule(max_per_scan=None, max_bytes_per_scan=None)
    assert lifted is not None and (lifted.max_per_scan, lifted.max_bytes_per_scan) == (None, None)
    with pytest.raises(ConfigError, match=r"connectors\.x\.config\.delete\.max_per_scan"):
        delete_rule(max_per_scan=-1)


@pytest.mark.parametrize(
    ("alias", "kind"),
    [
        ("resolwe.storage.connectors.localconnector.LocalFilesystemConnector", "local"),
        ("resolwe.storage.connectors.s3connector.AwsS3Connector", "s3"),
        ("resolwe.storage.connectors.googleconnector.GoogleConnector", "gcs"),
    ],
)
def test_the_original_class_paths_are_aliases(alias: str, kind: str) -> None:
    settings = {"path": "/data"} if kind == "local" else {"bucket": "b"}
    by_alias = build_config(minimal(x={"connector": alias, "config": settings}), environ={})
    by_name = build_config(minimal(x={"connector": kind, "config": settings}), environ={})
    assert by_alias.connectors["x"].kind == kind
    assert by_alias == by_name


def test_the_original_settings_block_pastes_in(tmp_path: Path) -> None:
    """The original's STORAGE_CONNECTORS, with its class paths and keys, as a connectors: block."""
    original = {
        "local": {
            "connector": "resolwe.storage.connectors.localconnector.LocalFilesystemConnector",
            "config": {"priority": 0, "path": "/data", "selinux_label": "z"},
        },
        "S3": {
            "connector": "resolwe.storage.connectors.s3connector.AwsS3Connector",
            "config": {
                "bucket": "b",
                "role_arn": "arn:aws:iam::123456789012:role/r",
                "multipart_threshold": 8388608,
                "multipart_chunksize": 8388608,
                "max_pool_connections": 50,
            },
        },
    }
    config = load_config(
        write(tmp_path, "c.json", json.dumps({"connectors": original})), environ={}
    )
    assert config.connectors["local"].settings.selinux_label == "z"  # type: ignore[attr-defined]
    assert config.connectors["S3"].settings.max_pool_connections == 50  # type: ignore[attr-defined]


def test_no_file_means_the_defaults() -> None:
    config = load_config(environ={})
    assert config == Config(
        database=DEFAULT_DATABASE, broker=None, connectors={}, source="defaults"
    )


@pytest.mark.parametrize("text", ["", "# nothing\n", "null\n"])
def test_an_empty_file_means_the_defaults(tmp_path: Path, text: str) -> None:
    config = load_yaml_text(tmp_path, text)
    assert (config.database, config.broker, dict(config.connectors)) == (DEFAULT_DATABASE, None, {})


# -- validation errors ------------------------------------------------------------


S3_BASE = {"bucket": "b"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"databse": "sqlite:///x"}, "databse: unknown key"),
        ({"database": 5}, "database: expected a string, got 5"),
        ({"connectors": []}, "connectors: expected a mapping, got []"),
        (minimal(S3={"connector": "s3"}), "connectors.S3.config: required key is missing"),
        (
            minimal(S3={"connector": "s3", "config": S3_BASE, "extra": 1}),
            "connectors.S3.extra: unknown key",
        ),
        (
            minimal(S3={"connector": "s3", "config": 7}),
            "connectors.S3.config: expected a mapping, got 7",
        ),
        (
            minimal(S3={"connector": "s3", "config": {}}),
            "connectors.S3.config.bucket: required key",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy": {"delay": "soon"}}}),
            "connectors.S3.config.copy.delay: expected an integer, got 'soon'",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy": {"delay": 1.5}}}),
            "connectors.S3.config.copy.delay: expected an integer, got 1.5",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy": {"delay": True}}}),
            "connectors.S3.config.copy.delay: expected an integer, got True",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy": {"dealy": 1}}}),
            "connectors.S3.config.copy.dealy: unknown key",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy": 3}}),
            "connectors.S3.config.copy: expected a mapping, got 3",
        ),
        (
            minimal(
                S3={
                    "connector": "s3",
                    "config": {**S3_BASE, "copy": {"data_slug": {"x": {"delay": "1"}}}},
                }
            ),
            "connectors.S3.config.copy.data_slug.x.delay: expected an integer, got '1'",
        ),
        (
            minimal(
                S3={
                    "connector": "s3",
                    "config": {**S3_BASE, "delete": {"min_other_copies": -1}},
                }
            ),
            "connectors.S3.config.delete.min_other_copies: expected an integer >= 0, got -1",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "verify": {"interval": 0}}}),
            "connectors.S3.config.verify.interval: expected an integer >= 1, got 0",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "path": "/data"}}),
            "connectors.S3.config.path: unknown key",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "priority": "high"}}),
            "connectors.S3.config.priority: expected an integer, got 'high'",
        ),
        (
            minimal(local={"connector": "local", "config": {"path": ["/a"]}}),
            "connectors.local.config.path: expected a string, got ['/a']",
        ),
        (
            minimal(G={"connector": "gcs", "config": {"bucket": "b", "region_name": "x"}}),
            "connectors.G.config.region_name: unknown key",
        ),
        (
            minimal(F={"connector": "ftp", "config": {}}),
            "connectors.F.connector: unknown connector 'ftp'; expected one of gcs, local, s3 "
            "or an original Resolwe class path",
        ),
        (
            minimal(S3={"connector": "resolwe.storage.connectors.s3connector.S3", "config": {}}),
            "connectors.S3.connector: unknown connector",
        ),
        (
            minimal(local={"connector": "local", "config": {"path": "/a", "fsync": "yes"}}),
            "connectors.local.config.fsync: expected true or false, got 'yes'",
        ),
        (
            minimal(local={"connector": "local", "config": {"path": "/a", "fsync": 1}}),
            "connectors.local.config.fsync: expected true or false, got 1",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "priority": None}}),
            "connectors.S3.config.priority: expected an integer, got None",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy_rule": {"delay": 1}}}),
            "connectors.S3.config.copy_rule: unknown key",
        ),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy": {"data_slug": {7: {}}}}}),
            "connectors.S3.config.copy.data_slug.7: expected a string key, got 7",
        ),
        ({"removal": None}, "removal: expected a mapping, got None"),
        (
            {"removal": {"max_per_scan": -5}},
            "removal.max_per_scan: expected an integer >= 0, got -5",
        ),
        ({"resolwe": {"connectors": {"old": 3}}}, "resolwe.connectors.old: expected a string"),
        (
            minimal(S3={"connector": "s3", "config": {**S3_BASE, "delete": {"max_per_scan": -1}}}),
            "connectors.S3.config.delete.max_per_scan: expected an integer >= 0, got -1",
        ),
        ([1, 2], "expected a mapping at the top level, got list"),
    ],
)
def test_errors_name_the_key_path_and_what_was_expected(document: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(document, source="settings.yaml", environ={})
    text = str(caught.value)
    assert text.startswith(f"settings.yaml: {message}")
    assert "\n" not in text
    assert isinstance(caught.value, UserError)


def test_the_number_of_further_problems_is_given() -> None:
    document = minimal(S3={"connector": "s3", "config": {"copy": {"delay": "x"}, "typo": 1}})
    with pytest.raises(ConfigError, match=r"\(and 2 more problems\)$"):
        build_config(document, source="c", environ={})


def test_the_problems_come_in_the_order_of_the_keys_then_the_unknown_ones() -> None:
    document = minimal(S3={"connector": "s3", "config": {"typo": 1, "copy": {"delay": "x"}}})
    with pytest.raises(ConfigError) as caught:
        build_config(document, source="c", environ={})
    assert str(caught.value) == (
        "c: connectors.S3.config.copy.delay: expected an integer, got 'x' (and 2 more problems)"
    )


def test_settings_are_read_only_values() -> None:
    config = build_config(
        minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy": {"delay": 2}}}),
        source="c",
        environ={},
    )
    settings = config.connectors["S3"].settings
    with pytest.raises(AttributeError, match="read-only"):
        settings.bucket = "other"  # type: ignore[misc]
    assert settings.copy_rule.delay == 2
    assert settings.replace(bucket="other").bucket == "other"
    assert settings.bucket == "b"
    again = build_config(
        minimal(S3={"connector": "s3", "config": {**S3_BASE, "copy": {"delay": 2}}}),
        source="c",
        environ={},
    )
    assert again.connectors["S3"].settings == settings
    assert settings.replace(priority=1) != settings
    assert "bucket='b'" in repr(settings)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.yaml", "connectors: [\n  a: b\n", r"malformed YAML at line \d+: "),
        ("c.yaml", "a: b\n c: d\n", r"malformed YAML at line \d+: "),
        ("c.yaml", "key: 'unclosed\n", r"malformed YAML"),
        ("c.toml", "database = \n", r"malformed TOML: .*line 1"),
        ("c.toml", "[connectors\n", r"malformed TOML: "),
        ("c.json", '{"database": }', r"malformed JSON at line 1: "),
        ("c.json", '{"a": 1,\n\n}', r"malformed JSON at line 3: "),
    ],
)
def test_malformed_files_give_one_line_naming_the_file(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    error = str(caught.value)
    assert error.startswith(f"{path}: ")
    assert "\n" not in error
    assert re.search(message, error), error


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder: folder / "missing.yaml", "does not exist"),
        (lambda folder: folder, "is a directory"),
    ],
)
def test_an_unreadable_file_is_an_error(tmp_path: Path, make: Any, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=rf"^configuration file '{path}' {message}$"):
        load_config(path, environ={})


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"database: \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path, environ={})


# -- environment ----------------------------------------------------------------


FILE_URLS = "database: sqlite:///from-file.sqlite3\nbroker: redis://file:6379/0\n"


def test_the_file_gives_database_and_broker(tmp_path: Path) -> None:
    config = load_yaml_text(tmp_path, FILE_URLS)
    assert (config.database, config.broker) == (
        "sqlite:///from-file.sqlite3",
        "redis://file:6379/0",
    )


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = load_yaml_text(
        tmp_path,
        FILE_URLS,
        **{ENV_DATABASE: "postgresql://env@db/catalog", ENV_BROKER: "redis://env:6379/1"},
    )
    assert (config.database, config.broker) == ("postgresql://env@db/catalog", "redis://env:6379/1")


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ("redis://:s3cret@[::1", "not a well-formed URL"),
        ("redis://:s3cret@127.0.0.1:abc/0", "not a well-formed URL"),
        ("redis://:s3cret@127.0.0.1:99999/0", "not a well-formed URL"),
        ("redis://:s3cret@127.0.0.1:6379/queues", "a database number, like /0"),
    ],
)
def test_a_malformed_broker_url_is_one_error_without_its_password(
    tmp_path: Path, broker: str, message: str
) -> None:
    """Not a traceback at the first connection, nor database 0 taken for ``/queues``."""
    with pytest.raises(ConfigError, match=rf"RESOLWE_STORAGE_BROKER: .*{message}") as caught:
        load_yaml_text(tmp_path, FILE_URLS, **{ENV_BROKER: broker})
    assert "s3cret" not in str(caught.value)


def test_a_malformed_database_url_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RESOLWE_STORAGE_DATABASE: not a well-formed URL"):
        load_yaml_text(tmp_path, FILE_URLS, **{ENV_DATABASE: "postgresql://u:p@db:port/x"})


@pytest.mark.parametrize("broker", ["redis://h:6379", "redis://h:6379/", "rediss://h/15"])
def test_a_broker_url_without_or_with_a_database_number(tmp_path: Path, broker: str) -> None:
    assert load_yaml_text(tmp_path, FILE_URLS, **{ENV_BROKER: broker}).broker == broker


def test_an_empty_environment_variable_does_not_override(tmp_path: Path) -> None:
    config = load_yaml_text(tmp_path, FILE_URLS, **{ENV_DATABASE: "", ENV_BROKER: ""})
    assert (config.database, config.broker) == (
        "sqlite:///from-file.sqlite3",
        "redis://file:6379/0",
    )


def test_the_environment_alone() -> None:
    config = load_config(environ={ENV_DATABASE: "sqlite:///env.sqlite3"})
    assert (config.database, config.broker) == ("sqlite:///env.sqlite3", None)


def test_the_process_environment_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``environ=``, the real environment: the config file and both URLs."""
    path = write(tmp_path, "picked.yaml", FILE_URLS)
    monkeypatch.setenv(ENV_CONFIG, str(path))
    monkeypatch.setenv(ENV_DATABASE, "sqlite:///env.sqlite3")
    monkeypatch.delenv(ENV_BROKER, raising=False)
    config = load_config()
    assert config.source == str(path)
    assert (config.database, config.broker) == ("sqlite:///env.sqlite3", "redis://file:6379/0")


def test_the_config_variable_picks_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "picked.yaml", FILE_URLS)
    config = load_config(environ={ENV_CONFIG: str(path)})
    assert config.source == str(path)
    assert config.database == "sqlite:///from-file.sqlite3"


def test_an_explicit_path_wins_over_the_config_variable(tmp_path: Path) -> None:
    chosen = write(tmp_path, "chosen.yaml", "database: sqlite:///chosen.sqlite3\n")
    config = load_config(chosen, environ={ENV_CONFIG: str(tmp_path / "missing.yaml")})
    assert config.database == "sqlite:///chosen.sqlite3"


def test_a_missing_file_named_by_the_variable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(environ={ENV_CONFIG: str(tmp_path / "missing.yaml")})


# -- URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///relative.sqlite3",
        "sqlite:////absolute/c.sqlite3",
        "postgresql://user@host/db",
        "postgres://user:pw@host:5433/db",
        "postgresql+psycopg2://user@host/db",  # as SQLAlchemy users write it
    ],
)
def test_good_database_urls(url: str) -> None:
    assert build_config({"database": url}, environ={}).database == url


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("mysql://user:s3cr3t@host/db", "scheme 'mysql'"),
        ("catalog.sqlite3", "no scheme"),
        ("/var/lib/catalog.sqlite3", "no scheme"),
        ("redis://host/0", "scheme 'redis'"),
        ("http://user:s3cr3t@host/db", "scheme 'http'"),
    ],
)
def test_bad_database_urls_are_rejected(url: str, scheme: str) -> None:
    expected = (
        "c.yaml: database: expected a sqlite:// or postgresql:// or postgres:// or "
        f"postgresql+psycopg2:// URL, got {scheme}"
    )
    with pytest.raises(ConfigError) as caught:
        build_config({"database": url}, source="c.yaml", environ={})
    assert str(caught.value) == expected
    with pytest.raises(ConfigError) as caught:
        build_config({}, source="c.yaml", environ={ENV_DATABASE: url})
    assert str(caught.value) == expected.replace("database:", f"{ENV_DATABASE}:")
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("url", ["http://host:6379", "amqp://host", "localhost:6379"])
def test_bad_broker_urls_are_rejected(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^c: broker: expected a redis:// or rediss:// URL"):
        build_config({"broker": url}, source="c", environ={})
    with pytest.raises(ConfigError, match=rf"^c: {ENV_BROKER}: expected a redis://"):
        build_config({}, source="c", environ={ENV_BROKER: url})


# -- relative paths ---------------------------------------------------------------


RELATIVE = """\
connectors:
  local: {connector: local, config: {path: data/local, public_url: local_data}}
  S3: {connector: s3, config: {bucket: b, credentials: secrets/s3.json}}
  GCS: {connector: gcs, config: {bucket: b, credentials: ../gcs.json}}
  abs: {connector: local, config: {path: /srv/data}}
"""


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "storage"
    write(folder, "config.yaml", RELATIVE)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # The file itself named relative to the working directory.
    config = load_config(Path("../etc/storage/config.yaml"), environ={})
    settings = {name: c.settings for name, c in config.connectors.items()}
    assert settings["local"].path == str(folder / "data" / "local")  # type: ignore[attr-defined]
    assert settings["S3"].credentials == str(folder / "secrets" / "s3.json")  # type: ignore[attr-defined]
    assert settings["GCS"].credentials == str(tmp_path / "etc" / "gcs.json")  # type: ignore[attr-defined]
    assert settings["abs"].path == "/srv/data"  # type: ignore[attr-defined]
    # A URL is not a file: it stays as written.
    assert settings["local"].public_url == "local_data"  # type: ignore[attr-defined]


def test_without_a_file_relative_paths_stay_as_written() -> None:
    document = minimal(local={"connector": "local", "config": {"path": "data"}})
    config = build_config(document, environ={})
    assert config.connectors["local"].settings.path == "data"  # type: ignore[attr-defined]


def test_a_home_folder_is_expanded_in_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = "connectors:\n  local: {connector: local, config: {path: ~/data}}\n"
    write(tmp_path, "config.yaml", text)
    config = load_config(tmp_path / "config.yaml", environ={})
    assert config.connectors["local"].settings.path == str(tmp_path / "home" / "data")  # type: ignore[attr-defined]
    document = minimal(
        S3={"connector": "s3", "config": {"bucket": "b", "credentials": "~/s3.json"}}
    )
    config = build_config(document, environ={})
    assert config.connectors["S3"].settings.credentials == str(tmp_path / "home" / "s3.json")  # type: ignore[attr-defined]


def test_our_connector_settings_reach_the_connectors(tmp_path: Path) -> None:
    from connectors.gcs import DEFAULT_TIMEOUT, GCSConnector
    from connectors.s3 import DEFAULT_CONNECT_TIMEOUT, S3Connector
    from resolwe_storage.wiring import build_connector

    document = {
        "connectors": {
            "S3": {
                "connector": "s3",
                "config": {"bucket": "b", "upload_checksums": False, "read_timeout": 5},
            },
            "S3-default": {"connector": "s3", "config": {"bucket": "c"}},
            "GCS": {"connector": "gcs", "config": {"bucket": "b", "timeout": 7}},
            "GCS-default": {"connector": "gcs", "config": {"bucket": "c"}},
        }
    }
    config = load_config(write(tmp_path, "c.json", json.dumps(document)), environ={})
    s3 = build_connector(config.connectors["S3"])
    default = build_connector(config.connectors["S3-default"])
    assert isinstance(s3, S3Connector) and isinstance(default, S3Connector)
    assert (s3.upload_checksums, s3.read_timeout, s3.connect_timeout) == (
        False,
        5,
        DEFAULT_CONNECT_TIMEOUT,
    )
    assert default.upload_checksums is True
    gcs = build_connector(config.connectors["GCS"])
    gcs_default = build_connector(config.connectors["GCS-default"])
    assert isinstance(gcs, GCSConnector) and isinstance(gcs_default, GCSConnector)
    assert (gcs.timeout, gcs_default.timeout) == (7, DEFAULT_TIMEOUT)


_LOCAL_PLACES = [
    ({"path": "/data/local"}, {"path": "/data/local/"}, True),
    ({"path": "/data"}, {"path": "/data/archive"}, True),
    ({"path": "/data/archive"}, {"path": "/data/../data"}, True),
    ({"path": "data"}, {"path": "./data"}, True),
    ({"path": "/data"}, {"path": "/data2"}, False),
]
_BUCKETS = [
    ({"bucket": "b"}, {"bucket": "b"}, True),
    (
        {"bucket": "b", "endpoint_url": "http://e"},
        {"bucket": "b", "endpoint_url": "http://e"},
        True,
    ),
    ({"bucket": "b"}, {"bucket": "b", "endpoint_url": "http://minio:9000"}, False),
    ({"bucket": "b"}, {"bucket": "c"}, False),
]


@pytest.mark.parametrize(
    ("kind", "first", "second", "shared"),
    [("local", *place) for place in _LOCAL_PLACES]
    + [(kind, *place) for kind in ("s3", "gcs") for place in _BUCKETS],
)
def test_two_connectors_on_one_storage_are_refused(
    kind: str, first: dict[str, str], second: dict[str, str], shared: bool
) -> None:
    """Two names for the same bytes: deleting the copy on one, the other
    confirmed first, removed the very bytes the delete counted on."""
    document = {
        "connectors": {
            "one": {"connector": kind, "config": first},
            "two": {"connector": kind, "config": {**second, "priority": 5}},
        }
    }
    if not shared:
        assert set(build_config(document, environ={}).connectors) == {"one", "two"}
        return
    key = "path" if kind == "local" else "bucket"
    with pytest.raises(ConfigError, match=rf"^configuration: connectors\.two\.config\.{key}: "):
        build_config(document, environ={})


def test_connectors_of_other_kinds_may_share_a_bucket_name() -> None:
    document = {
        "connectors": {
            "S3": {"connector": "s3", "config": {"bucket": "b"}},
            "GCS": {"connector": "gcs", "config": {"bucket": "b"}},
        }
    }
    assert set(build_config(document, environ={}).connectors) == {"S3", "GCS"}


@pytest.mark.parametrize(
    ("setting", "value"),
    [("upload_checksums", "no"), ("read_timeout", 0), ("connect_timeout", -1)],
)
def test_bad_values_of_our_s3_settings_are_refused(
    tmp_path: Path, setting: str, value: object
) -> None:
    document = {
        "connectors": {"S3": {"connector": "s3", "config": {"bucket": "b", setting: value}}}
    }
    with pytest.raises(ConfigError, match=f"connectors.S3.config.{setting}"):
        load_config(write(tmp_path, "c.json", json.dumps(document)), environ={})


def test_the_configuration_never_shows_a_password(tmp_path: Path) -> None:
    config = load_yaml_text(
        tmp_path,
        "database: postgresql://app:db-secret@db/catalog\n"
        "broker: redis://:redis-secret@cache:6379/0\n",
    )
    shown = f"{config!r} {config} {[config]}"
    assert "db-secret" not in shown and "redis-secret" not in shown
    assert "postgresql://app:***@db/catalog" in shown and "redis://:***@cache:6379/0" in shown


def test_resolwe_connector_names_map_to_configured_connectors(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    connectors = {"local": {"connector": "local", "config": {"path": "x"}}}
    path.write_text(
        json.dumps({"connectors": connectors, "resolwe": {"connectors": {"S3": "local"}}})
    )
    assert load_config(path).resolwe_connectors == {"S3": "local"}
    path.write_text(
        json.dumps({"connectors": connectors, "resolwe": {"connectors": {"S3": "nope"}}})
    )
    with pytest.raises(ConfigError, match=r"resolwe\.connectors\.S3: 'nope' is not a configured"):
        load_config(path)


@pytest.mark.parametrize("rule", ["copy", "delete"])
def test_an_empty_rule_is_no_rule_as_in_the_original(rule: str) -> None:
    """The original (``has_rules``: ``len(rules) > 0``; ``to_copy``/``to_delete``:
    ``if not rules``) takes ``copy: {}`` or ``delete: {}`` for no rule at all.

    A settings block pasted in (SPEC §4) must keep its meaning: here an empty
    delete rule was one with delay 0, deleting every copy it could at once.
    """
    config = build_config(
        {
            "connectors": {
                "local": {"connector": "local", "config": {"path": "/data", "priority": 0}},
                "S3": {"connector": "s3", "config": {"bucket": "b", "priority": 10, rule: {}}},
            }
        },
        environ={},
    )
    policy = config.policies["S3"]
    assert (policy.copy if rule == "copy" else policy.delete) is None


def test_removals_are_capped_per_scan_unless_the_configuration_says_null() -> None:
    assert build_config({}, environ={}).removal_cap == 1_000
    assert build_config({"removal": {"max_per_scan": 20}}, environ={}).removal_cap == 20
    assert build_config({"removal": {"max_per_scan": None}}, environ={}).removal_cap is None
