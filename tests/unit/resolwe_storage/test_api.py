"""The Python API for other services, on a real SQLite catalog and the in-process broker."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from catalog.models import AccessLog, StorageLocation, utcnow
from catalog.queries import DEFAULT_ACCESS_RESOLUTION, record_access
from resolwe_storage.api import StorageService
from resolwe_storage.config import load_config
from resolwe_storage.errors import InputError
from resolwe_storage.wiring import open_catalog
from workers.broker import make_broker

ITEM_CREATED = datetime(2026, 1, 1)
ITEM = {
    "key": "data-1",
    "created": "2026-01-01T00:00:00Z",
    "locations": [
        {"connector": "local", "url": "1", "status": "OK"},
        {"connector": "archive", "url": "1", "status": "OK"},
    ],
    "files": [{"path": "a.txt", "size": 3}, {"path": "b/c.txt", "size": 5}, {"path": "b/"}],
}


@pytest.fixture
def service(tmp_path: Path) -> StorageService:
    document = {
        "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        "connectors": {
            name: {
                "connector": "local",
                "config": {
                    "priority": n,
                    "path": str(tmp_path / name),
                    **({"public_url": f"/{name}-data"} if name != "local" else {}),
                },
            }
            for n, name in enumerate(("local", "archive", "cold"))
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    config = load_config(path)
    storage = StorageService(config, open_catalog(config.database), make_broker(None))
    storage.register(ITEM)
    return storage


def queued(service: StorageService, queue: str) -> list[tuple[object, ...]]:
    broker = service.broker
    assert isinstance(broker, StubBroker)
    messages = []
    while not broker.queues[queue].empty():
        messages.append(tuple(json.loads(broker.queues[queue].get())["args"]))
    return messages


def test_a_requested_copy_is_queued_once_and_not_requested_twice(
    service: StorageService,
) -> None:
    assert service.request_copy("data-1", to="cold") == 1  # small files share a job
    assert queued(service, "copy") == [(1, "cold", ["a.txt", "b/c.txt"])]
    location = StorageLocation.get(StorageLocation.connector_name == "cold")
    assert (location.status, location.url) == ("PR", "1")
    with pytest.raises(InputError, match="already has a location on 'cold' \\(PR\\)"):
        service.request_copy("data-1", to="cold")


@pytest.mark.parametrize(
    ("key", "target", "message"),
    [
        ("data-1", "nowhere", "connector 'nowhere' is not configured"),
        ("missing", "cold", "no item with key 'missing'"),
    ],
)
def test_bad_requests_are_one_clear_error(
    service: StorageService, key: str, target: str, message: str
) -> None:
    with pytest.raises(Exception, match=message):
        service.request_copy(key, to=target)


def test_a_verification_already_queued_is_not_queued_again(service: StorageService) -> None:
    assert service.request_verify("data-1") == 2
    assert service.request_verify("data-1", connector="local") == 0
    expected = [(1, "archive", ["a.txt", "b/c.txt"]), (1, "local", ["a.txt", "b/c.txt"])]
    assert sorted(queued(service, "verify")) == expected
    with pytest.raises(InputError, match="no OK copy on 'cold' to verify"):
        service.request_verify("data-1", connector="cold")


def test_a_verification_of_a_large_item_gets_time_to_read_it_all(
    service: StorageService,
) -> None:
    from workers.messages import DEFAULT_TIME_LIMIT_MS, time_limit_ms

    big = 50 * 1024**3
    service.register(
        {
            "key": "big",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": "big", "status": "OK"}],
            "files": [{"path": "a.bam", "size": big - 1}, {"path": "b.bam", "size": 1}],
        }
    )
    assert service.request_verify("big") == 2  # a job per file: the large one alone
    broker = service.broker
    assert isinstance(broker, StubBroker)
    jobs = [json.loads(body) for body in broker.queues["verify"].queue]
    limits = {tuple(job["args"][2]): job["options"]["time_limit"] for job in jobs}
    assert limits == {("a.bam",): time_limit_ms(big - 1), ("b.bam",): time_limit_ms(1)}
    assert limits["a.bam",] > DEFAULT_TIME_LIMIT_MS + 3_600_000


def test_reading_locks_the_preferred_copy_for_the_block(service: StorageService) -> None:
    with service.reading("data-1", reason="analysis") as location:
        assert location.connector_name == "local"
        lock = AccessLog.get(AccessLog.finished.is_null())
        assert (lock.storage_location_id, lock.reason) == (location.id, "analysis")
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0


def test_reading_a_copy_being_deleted_takes_another(service: StorageService) -> None:
    StorageLocation.update(status="DE").where(StorageLocation.connector_name == "local").execute()
    with service.reading("data-1") as location:
        assert location.connector_name == "archive"


def test_a_url_of_a_file_from_a_copy_that_has_urls(service: StorageService) -> None:
    assert service.url("data-1", "b/c.txt", connector="archive") == "/archive-data/1/b/c.txt"
    # The preferred copy (local) has no public_url: the next copy that has URLs.
    assert service.url("data-1", "a.txt") == "/archive-data/1/a.txt"
    # Asked for the copy on local, a clear refusal.
    with pytest.raises(InputError, match=r"\('local'; a local connector needs public_url\)"):
        service.url("data-1", "a.txt", connector="local")
    with pytest.raises(InputError, match=r"has no file 'nope\.txt'"):
        service.url("data-1", "nope.txt")
    with pytest.raises(InputError, match="no OK copy on 'cold'"):
        service.url("data-1", "a.txt", connector="cold")


def last_access() -> dict[str, datetime]:
    return {loc.connector_name: loc.last_update for loc in StorageLocation.select()}


def test_reading_a_url_and_a_copy_request_record_the_last_access(
    service: StorageService,
) -> None:
    """Delete delays count from the last access (SPEC §5), as the original's listener has it."""
    imported = last_access()
    assert imported == {"local": ITEM_CREATED, "archive": ITEM_CREATED}
    began = utcnow()
    with service.reading("data-1") as location:
        assert location.connector_name == "local"
    after_read = last_access()
    assert after_read["local"] >= began and after_read["archive"] == ITEM_CREATED
    service.url("data-1", "a.txt")  # from archive: local gives no URLs
    after_url = last_access()
    assert after_url["archive"] >= began and after_url["local"] == after_read["local"]
    service.request_copy("data-1", to="cold")
    assert last_access()["local"] == after_read["local"]  # read a moment ago: not written again


def test_a_burst_of_reads_writes_the_last_access_once_a_minute(
    service: StorageService,
) -> None:
    with service.reading("data-1"):
        pass
    first = last_access()["local"]
    for _ in range(5):
        with service.reading("data-1"):
            pass
    assert last_access()["local"] == first
    # A minute later, the next read is written.
    StorageLocation.update(last_update=first - DEFAULT_ACCESS_RESOLUTION).where(
        StorageLocation.connector_name == "local"
    ).execute()
    with service.reading("data-1"):
        pass
    assert last_access()["local"] > first - DEFAULT_ACCESS_RESOLUTION


def test_a_copy_under_way_keeps_its_progress_mark(service: StorageService) -> None:
    assert record_access([loc.id for loc in StorageLocation.select()], now=utcnow()) == 2
    service.request_copy("data-1", to="cold")
    reserved = StorageLocation.get(StorageLocation.connector_name == "cold")
    later = utcnow() + timedelta(hours=1)
    assert record_access([reserved.id], now=later) == 0  # PR: not a copy that counts


def test_a_removed_item_is_refused_and_restored_within_the_grace(service: StorageService) -> None:
    from catalog.errors import ItemNotFoundError
    from catalog.removal import RestoreRefused

    with pytest.raises(ItemNotFoundError):
        service.remove(["data-1", "nope"])
    assert StorageLocation.select().count() == 2  # nothing removed
    [removal] = service.remove(["data-1"])
    assert removal.new and not service.remove("data-1")[0].new  # idempotent
    with pytest.raises(InputError, match="was removed"):
        service.url("data-1", "a.txt")
    with pytest.raises(InputError, match="was removed"), service.reading("data-1"):
        pass
    with pytest.raises(RestoreRefused, match="grace of 0 day"):
        service.restore("data-1")  # the default grace: none


def test_registering_under_a_removed_items_key_is_refused(service: StorageService) -> None:
    """A removed item's copies all go after its grace, whatever is registered since:
    new bytes registered under its key would go with them. So, as ``ingest``, the
    registration is refused, nothing stored, until the item is restored; saying
    again that it is removed is fine."""
    service.remove("data-1")
    again = {**ITEM, "locations": [*ITEM["locations"], {"connector": "cold", "url": "1"}]}
    with pytest.raises(InputError, match=r"^item 'data-1' was removed .*restore it first"):
        service.register(again)
    assert not StorageLocation.select().where(StorageLocation.connector_name == "cold").exists()
    with pytest.raises(InputError, match="was removed"):
        service.register({"key": "new", "created": "2026-01-01T00:00:00Z"}, again)
    assert not service.register({**ITEM, "status": "removed"}).created
    assert service.register({"key": "new", "created": "2026-01-01T00:00:00Z"}).created == 1


def test_a_read_lock_whose_last_access_cannot_be_written_is_not_left_open(
    service: StorageService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service's lock never expires: one left open by a failed write locks the copy forever."""
    import peewee as pw

    import resolwe_storage.api as api

    def locked(*args: object, **kwargs: object) -> int:
        raise pw.OperationalError("database is locked")

    monkeypatch.setattr(api, "record_access", locked)
    with pytest.raises(pw.OperationalError), service.reading("data-1"):
        pass
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0


def test_a_read_lock_is_not_closed_by_the_next_import_of_its_item(
    service: StorageService,
) -> None:
    """An import closes the open locks of reason ``import`` (those it made): a reader's lock
    of that name would be closed mid-read by the next import of the item, and the copy
    deleted under the reader. The name is refused; any other is kept through imports."""
    changed = {**ITEM, "files": [*ITEM["files"], {"path": "d.txt", "size": 1}]}  # type: ignore[list-item]
    with pytest.raises(InputError, match="reserved"), service.reading("data-1", reason="import"):
        pass
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0
    with service.reading("data-1", reason="analysis") as location:
        service.register(changed)
        assert (
            AccessLog.select()
            .where(AccessLog.finished.is_null() & (AccessLog.storage_location == location.id))
            .count()
            == 1
        )


def signing_service(tmp_path: Path) -> StorageService:
    """An item whose copies are on S3 and GCS, whose URLs are signed here (nothing contacted)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "1",
        "private_key": pem,
        "client_email": "signer@p.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    (tmp_path / "gcs.json").write_text(json.dumps(account))
    (tmp_path / "s3.json").write_text(json.dumps({"AccessKeyId": "AK", "SecretAccessKey": "SK"}))
    document = {
        "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        "connectors": {
            "S3": {
                "connector": "s3",
                "config": {
                    "bucket": "b",
                    "region_name": "eu-central-1",
                    "credentials": str(tmp_path / "s3.json"),
                },
            },
            "GCS": {
                "connector": "gcs",
                "config": {"bucket": "b", "credentials": str(tmp_path / "gcs.json")},
            },
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    config = load_config(path)
    storage = StorageService(config, open_catalog(config.database), make_broker(None))
    locations = [{"connector": name, "url": "1", "status": "OK"} for name in ("S3", "GCS")]
    storage.register({**ITEM, "locations": locations})
    return storage


@pytest.mark.parametrize("connector", ["S3", "GCS"])
@pytest.mark.parametrize("expires", [0, -60, 7 * 24 * 3600 + 1])
def test_a_url_for_a_lifetime_no_store_signs_is_refused_in_one_line(
    tmp_path: Path, connector: str, expires: int
) -> None:
    """A presigned URL lives 1 s to 7 days (SigV4 and GCS V4): else no URL, and why."""
    service = signing_service(tmp_path)
    assert "Signature=" in service.url("data-1", "a.txt", connector=connector, expires=60)
    with pytest.raises(InputError, match=r"^expires: .* 1 and 604800 seconds") as refused:
        service.url("data-1", "a.txt", connector=connector, expires=expires)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("connector", ["S3", "GCS"])
def test_a_presigned_url_holds_its_copy_from_deletes_until_it_ends(
    tmp_path: Path, connector: str
) -> None:
    """A URL handed out keeps working for its life, whatever the delete delay: its copy
    is held (an open access log that ends with the URL), one hold a copy, moved on by a
    URL that outlives it; the scan closes it once past, quietly."""
    from catalog.queries import URL_HOLD_REASON, close_expired_locks, open_lock_count

    service = signing_service(tmp_path)
    began = utcnow()
    service.url("data-1", "a.txt", connector=connector, expires=600)
    location = StorageLocation.get(StorageLocation.connector_name == connector)
    other = StorageLocation.get(StorageLocation.connector_name != connector)

    def holds(loc: StorageLocation) -> list[AccessLog]:
        return list(
            AccessLog.select().where(
                (AccessLog.storage_location == loc) & AccessLog.finished.is_null()
            )
        )

    [hold] = holds(location)
    assert hold.reason == URL_HOLD_REASON and not holds(other)
    assert began + timedelta(seconds=600) <= hold.expires <= utcnow() + timedelta(seconds=600)
    assert open_lock_count(location.id) == 1  # what a delete's re-check counts

    service.url("data-1", "b/c.txt", connector=connector, expires=60)  # ends sooner: no change
    assert [(h.id, h.expires) for h in holds(location)] == [(hold.id, hold.expires)]
    service.url("data-1", "a.txt", connector=connector, expires=7200)  # outlives it: moved on
    [longer] = holds(location)
    assert longer.id == hold.id and longer.expires >= began + timedelta(seconds=7200)

    assert close_expired_locks(utcnow() + timedelta(seconds=3600)) == []  # still running
    [closed] = close_expired_locks(utcnow() + timedelta(seconds=7201))
    assert closed.id == hold.id and not holds(location)


def test_a_public_url_puts_no_hold(service: StorageService) -> None:
    """A public URL has no end: it holds nothing (its read is the last access)."""
    service.url("data-1", "a.txt")
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0


def test_a_url_of_a_folder_entry_is_refused(service: StorageService) -> None:
    """A folder entry (``b/``) is no object on any backend: a URL of it serves nothing."""
    with pytest.raises(
        InputError, match=r"^PATH 'b/' is a folder of the item; a URL is of one file$"
    ):
        service.url("data-1", "b/")
    assert service.url("data-1", "b/c.txt") == "/archive-data/1/b/c.txt"


def test_no_url_of_a_copy_whose_delete_was_decided_meanwhile(
    service: StorageService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker may decide a delete between the URL's look-up and its handing out: the URL
    of a copy being deleted points at bytes about to go. The next copy's URL is given."""
    from connectors.local import LocalConnector

    cold = {"connector": "cold", "url": "1", "status": "OK"}
    service.register({**ITEM, "locations": [*ITEM["locations"], cold]})  # type: ignore[list-item]
    signing = LocalConnector.public_url

    def decided_meanwhile(self: LocalConnector, path: str) -> str:
        if self.name == "archive":  # a worker decides the delete of this copy now
            StorageLocation.update(status="DE").where(
                StorageLocation.connector_name == "archive"
            ).execute()
        return signing(self, path)

    monkeypatch.setattr(LocalConnector, "public_url", decided_meanwhile)
    assert service.url("data-1", "a.txt") == "/cold-data/1/a.txt"
    StorageLocation.update(status="OK").where(StorageLocation.connector_name == "archive").execute()
    with pytest.raises(InputError, match="no OK copy on 'archive'"):
        service.url("data-1", "a.txt", connector="archive")


def test_a_connector_not_configured_is_named_as_such(service: StorageService) -> None:
    """As ``request_verify`` and the command line: the choices named, not "no OK copy"."""
    with pytest.raises(InputError, match=r"connector 'tape' is not configured \(configured: "):
        service.url("data-1", "a.txt", connector="tape")
    with (
        pytest.raises(InputError, match=r"connector 'tape' is not configured \(configured: "),
        service.reading("data-1", connector="tape"),
    ):
        pass
