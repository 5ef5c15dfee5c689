"""The catalog gauges: read by the first scrape (or begun at start), then again as often as
they cost: in the scrape where a read is quick, behind the scrapes where it takes seconds."""

from __future__ import annotations

from typing import Any

import peewee as pw
import pytest

from catalog.database import open_database
from catalog.models import FileStorage
from resolwe_storage.telemetry import CatalogCollector, reuse_seconds


class Clock:
    """A clock that moves when told, and ``step`` seconds at every look."""

    def __init__(self) -> None:
        self.now = 0.0
        self.step = 0.0

    def __call__(self) -> float:
        seen = self.now
        self.now += self.step
        return seen


def scrape(collector: CatalogCollector) -> dict[str, float]:
    """Every sample a scrape serves, by name and labels."""
    return {
        sample.name + repr(sorted(sample.labels.items())): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def items(found: dict[str, float]) -> float:
    return sum(value for name, value in found.items() if name.startswith("resolwe_storage_items["))


def add_items(count: int) -> None:
    for _ in range(count):
        FileStorage.create(key=f"item-{FileStorage.select().count()}")


@pytest.mark.parametrize(
    ("took", "expected"), [(0.0, 5.0), (0.2, 5.0), (0.5, 5.0), (3.1, 31.0), (60.0, 600.0)]
)
def test_a_read_is_reused_for_ten_times_what_it_cost_and_never_less_than_five_seconds(
    took: float, expected: float
) -> None:
    assert reuse_seconds(took, cache_seconds=5.0, cost_factor=10.0) == pytest.approx(expected)


def test_a_due_read_that_was_quick_is_made_in_the_scrape_that_finds_it_due(
    catalog_db: pw.Database,
) -> None:
    add_items(2)
    clock = Clock()
    collector = CatalogCollector(catalog_db, None, cache_seconds=5.0, clock=clock)
    assert items(scrape(collector)) == 2  # the first scrape waits for the first read
    add_items(1)
    clock.now = 4.9
    assert items(scrape(collector)) == 2, "reused until due"
    clock.now = 5.0
    found = scrape(collector)
    assert items(found) == 3, "a read that took no time is made in the scrape: figures as of it"
    assert found["resolwe_storage_catalog_gauges_age_seconds[]"] == pytest.approx(0.0)


def test_a_due_read_that_was_slow_goes_on_behind_and_the_scrape_serves_the_last_one(
    catalog_db: pw.Database,
) -> None:
    add_items(2)
    clock = Clock()
    clock.step = 0.5  # the first read takes 0.5 s: as slow as a read made behind
    collector = CatalogCollector(
        catalog_db, None, cache_seconds=5.0, inline_seconds=0.5, clock=clock
    )
    assert items(scrape(collector)) == 2
    clock.step = 0.0
    read_at = 0.5
    add_items(1)
    clock.now = read_at + 4.9
    assert items(scrape(collector)) == 2
    collector.settle()
    assert items(scrape(collector)) == 2, "no read began before the last one was due"
    clock.now = read_at + 5.0
    found = scrape(collector)
    assert items(found) == 2, "a due read goes on behind; the scrape does not wait for it"
    assert found["resolwe_storage_catalog_gauges_age_seconds[]"] == pytest.approx(5.0)
    collector.settle()
    found = scrape(collector)
    assert items(found) == 3
    assert found["resolwe_storage_catalog_gauges_age_seconds[]"] == pytest.approx(0.0)


def test_a_primed_collector_reads_at_once_behind_and_the_first_scrape_serves_that_read(
    catalog_db: pw.Database,
) -> None:
    add_items(2)
    clock = Clock()
    collector = CatalogCollector(catalog_db, None, cache_seconds=5.0, clock=clock)
    collector.prime()
    first = collector.catalog_read()  # the primed read (waited for while under way)
    assert first.facts is not None and first.facts["items"] == {"OK": 2}
    add_items(1)
    collector.prime()  # a read was made: nothing more begins
    collector.settle()
    assert collector.catalog_read() is first
    assert items(scrape(collector)) == 2, "the primed read, reused until due"


def test_a_costly_read_is_not_begun_again_for_ten_times_as_long(
    catalog_db: pw.Database,
) -> None:
    add_items(1)
    clock = Clock()
    clock.step = 3.0  # every look at the clock, 3 s later: the first read takes 3 s
    collector = CatalogCollector(catalog_db, None, cache_seconds=5.0, clock=clock)
    found = scrape(collector)
    read_at = 3.0  # looked at when it began (0) and when it ended (3)
    assert found["resolwe_storage_catalog_gauges_read_seconds[]"] == pytest.approx(3.0)
    clock.step = 0.0
    add_items(1)
    clock.now = read_at + 29.9  # more than the five seconds, less than 10 x 3 s
    scrape(collector)
    collector.settle()
    assert items(scrape(collector)) == 1
    clock.now = read_at + 30.0
    scrape(collector)
    collector.settle()
    found = scrape(collector)
    assert items(found) == 2
    assert found["resolwe_storage_catalog_gauges_read_seconds[]"] == pytest.approx(0.0)


def test_a_catalog_that_does_not_answer_serves_no_catalog_gauges(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gone = open_database(f"sqlite:///{tmp_path / 'no-such-folder' / 'catalog.sqlite3'}")
    collector = CatalogCollector(gone, None, clock=Clock())
    found = scrape(collector)
    assert not [name for name in found if name.startswith("resolwe_storage_items")]
    assert "resolwe_storage_catalog_gauges_age_seconds[]" in found
    assert "metrics: the catalog did not answer" in caplog.text
