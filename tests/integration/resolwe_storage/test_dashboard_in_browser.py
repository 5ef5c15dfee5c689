"""The dashboard as an operator sees it: a ``dashboard`` process, taken by headless Chromium.

The catalog and Redis hold known work (queued, delayed, running and dead
jobs, damaged and lost items); the page must show the numbers Redis and
the catalog hold, read here with their own commands (``LLEN``, ``SCARD``,
SQL), not with the code under test. Retry and discard go through the
page's own forms, with and without the token.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from tests.conftest import server_missing
from tests.processes import Cli, copying_pair, fetch, wait_for
from tests.servers.process import free_port

if TYPE_CHECKING:
    from tests.servers.redis import PrivateRedis

pytest_plugins = ["tests.servers.redis"]

TOKEN = "a-token-of-the-operators-0123456789"
#: Where the test also leaves its screenshot, when set (the README's picture).
SCREENSHOT_VARIABLE = "DASHBOARD_SCREENSHOT"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) under Selenium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        server_missing("Chromium", "install Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)  # an element looked for may be on a page still loading
    try:
        yield driver
    finally:
        driver.quit()


def dead_letter(client: redis.Redis, queue: str, item_id: int, key: str, reason: str) -> str:
    """A copy job of item ``item_id`` given up, as a worker leaves it; its Redis id."""
    redis_id = message_id = str(uuid.uuid4())
    body = {
        "queue_name": queue,
        "actor_name": "copy_files",
        "args": [item_id, "archive", ["f.txt", "g.txt"]],
        "kwargs": {},
        "options": {"redis_message_id": redis_id, "retries": 5},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000) - 60_000,
    }
    client.hset(f"dramatiq:{queue}.XQ.msgs", redis_id, json.dumps(body))
    client.zadd(f"dramatiq:{queue}.XQ", {redis_id: int(time.time() * 1000)})
    client.set(f"resolwe-storage:dead:{message_id}", json.dumps({"keys": [key], "reason": reason}))
    return redis_id


def start_dashboard(
    cli: Cli, tmp_path: Path, *args: str, name: str = "dashboard"
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = cli.start(
        "dashboard", "--bind", f"127.0.0.1:{port}", *args, log=tmp_path / f"{name}.log"
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: fetch(f"{base}/healthz")[0] == 200, "the dashboard to answer")
    return process, base


@contextlib.contextmanager
def at_once(browser: Any) -> Iterator[None]:
    """Looks for elements answer at once: an element that must be absent is not waited
    for (the implicit wait, 5 s, is for pages still loading)."""
    browser.implicitly_wait(0)
    try:
        yield
    finally:
        browser.implicitly_wait(5)


def cell(browser: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.CSS_SELECTOR, selector).text).strip()


def catalog_rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "catalog.sqlite3") as connection:
        return list(connection.execute(sql))


def test_the_dashboard_shows_what_redis_and_the_catalog_hold_and_acts_only_with_the_token(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    cli = Cli(
        copying_pair(tmp_path, broker=redis_url), env={"RESOLWE_STORAGE_DASHBOARD_TOKEN": TOKEN}
    )
    for key in ("a1", "a2", "a3", "broken"):
        folder = tmp_path / "local" / key
        folder.mkdir(parents=True)
        (folder / "f.txt").write_text(key * 100)
        (folder / "g.txt").write_text("g")
        cli.ok("ingest", "local", folder, "--key", key)
    # Its only copy loses a file, which a verification finds: damaged, and lost.
    (tmp_path / "local" / "broken" / "f.txt").unlink()
    assert cli("verify", "broken").code != 0
    cli.ok("deletes", "pause", "--note", "storage migration")
    # One pass of the scheduler: copies of a1..a3 reserved (in progress) and queued.
    cli.ok("scheduler", "--once")
    client = redis.Redis.from_url(redis_url)
    now_ms = int(time.time() * 1000)
    # A worker that took a job (running), and a job waiting out a retry's backoff.
    client.zadd("dramatiq:__heartbeats__", {"worker-one": now_ms})
    client.sadd("dramatiq:__acks__.worker-one.copy", "running-job")
    client.rpush("dramatiq:copy.DQ", "delayed-job")
    secret = str(tmp_path / "archive")
    dead = [
        dead_letter(client, "copy", 1, "a1", f"failed: Permission denied: '{secret}/a1/f.txt'"),
        dead_letter(client, "copy", 2, "a2", "gave up after 5 tries: timed out"),
    ]
    dashboard, base = start_dashboard(cli, tmp_path, "--allow-actions", "--refresh", "0")
    try:
        browser.get(base + "/")
        for queue in ("copy", "delete", "verify"):
            row = f'tr[data-queue="{queue}"] td[data-field='
            assert cell(browser, row + '"queued"]') == str(client.llen(f"dramatiq:{queue}"))
            assert cell(browser, row + '"delayed"]') == str(client.llen(f"dramatiq:{queue}.DQ"))
            running = sum(
                client.scard(name) for name in client.scan_iter(f"dramatiq:__acks__.*.{queue}")
            )
            assert cell(browser, row + '"running"]') == str(running)
            assert cell(browser, row + '"dead"]') == str(client.zcard(f"dramatiq:{queue}.XQ"))
        assert (cell(browser, 'tr[data-queue="copy"] td[data-field="queued"]')) == "1"
        assert cell(browser, 'tr[data-queue="copy"] td[data-field="dead"]') == "2"
        assert cell(browser, "#workers").startswith("1 worker process(es) alive")

        for status, count in catalog_rows(
            tmp_path, "SELECT status, COUNT(*) FROM file_storage GROUP BY status"
        ):
            assert cell(browser, f'#items tr[data-status="{status}"] td.n') == str(count)
        states = {"OK": "ok", "DM": "damaged", "PR": "in_progress", "UP": "uploading"}
        for connector, status, count in catalog_rows(
            tmp_path,
            "SELECT connector_name, status, COUNT(*) FROM storage_location"
            " GROUP BY connector_name, status",
        ):
            shown = cell(
                browser, f'tr[data-connector="{connector}"] td[data-state="{states[status]}"]'
            )
            assert shown == str(count)
        [(ok_bytes,)] = catalog_rows(
            tmp_path,
            "SELECT SUM(p.size) FROM storage_location l JOIN referenced_path p"
            " ON p.file_storage_id = l.file_storage_id"
            " WHERE l.status = 'OK' AND l.connector_name = 'local'",
        )
        shown_bytes = browser.find_element(
            By.CSS_SELECTOR, 'tr[data-connector="local"] td[data-state="bytes"]'
        ).get_attribute("title")
        assert shown_bytes == f"{ok_bytes} bytes"
        [(unfinished,)] = catalog_rows(
            tmp_path,
            "SELECT COUNT(DISTINCT file_storage_id) FROM storage_location"
            " WHERE status IN ('PR', 'UP', 'DM')",
        )
        assert cell(browser, 'tr[data-field="under_replicated"] td.n') == str(unfinished) == "4"
        assert cell(browser, 'tr[data-field="damaged"] td.n') == "1"
        assert cell(browser, 'tr[data-field="lost"] td.n') == "1"
        # A small catalog's counts are read in the request (or just before, at start).
        assert re.fullmatch(
            r"Counts read from the catalog (now|\d s ago), in 0\.\d s; read again once 5 s old\.",
            cell(browser, "#counted"),
        )
        assert "broken" in cell(browser, "#lost")
        deletes = cell(browser, "#deletes")
        assert "Deletes are paused" in deletes and "storage migration" in deletes
        assert "1 job(s) queued; no delete held back." in deletes
        screenshot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        if os.environ.get(SCREENSHOT_VARIABLE):
            shutil.copyfile(screenshot, os.environ[SCREENSHOT_VARIABLE])

        # Dead letters: who, what, why; no backend path on the page.
        browser.get(base + "/dead")
        page = browser.page_source
        assert secret not in page and str(tmp_path) not in page
        first = f'tr[data-id="{dead[0]}"]'
        assert "a1" in cell(browser, first) and "<archive>/a1/f.txt" in cell(browser, first)
        assert cell(browser, f"{first} td.n") == "2"  # its files

        def press(row: str, button: str, token: str) -> None:
            """Give ``token`` and press ``button`` of ``row``; return once the answer is shown."""
            from selenium.common.exceptions import WebDriverException
            from selenium.webdriver.support.wait import WebDriverWait

            browser.get(base + "/dead")
            form = browser.find_element(By.CSS_SELECTOR, f"{row} form:has(button.{button})")
            form.find_element(By.NAME, "token").send_keys(token)
            form.find_element(By.CSS_SELECTOR, f"button.{button}").click()

            def answered(_: Any) -> bool:
                # The form is gone from the page once the answer replaced it:
                # chromedriver says so as a stale reference, or (Chromium
                # 156.0.8078.129) as "Node ... does not belong to the document".
                try:
                    form.is_enabled()
                except WebDriverException:
                    return True
                return False

            WebDriverWait(browser, 30).until(answered)

        press(first, "retry", "not-the-token")
        assert "refused: wrong or missing token" in browser.page_source
        assert client.zcard("dramatiq:copy.XQ") == 2 and client.llen("dramatiq:copy") == 1

        press(first, "retry", TOKEN)
        assert cell(browser, "#message") == "requeued 1 job(s) on copy"
        assert client.zcard("dramatiq:copy.XQ") == 1 and client.llen("dramatiq:copy") == 2
        revived = json.loads(client.hget("dramatiq:copy.msgs", dead[0]))
        assert revived["args"][0] == 1 and revived["options"]["retries"] == 0

        press(f'tr[data-id="{dead[1]}"]', "discard", TOKEN)
        assert cell(browser, "#message") == "discarded 1 dead letter(s) of copy"
        assert client.zcard("dramatiq:copy.XQ") == 0 and client.llen("dramatiq:copy") == 2
        assert "No dead letters." in browser.page_source

        # All at once, with the token.
        later = [dead_letter(client, "copy", n, f"a{n}", "failed") for n in (1, 2, 3)]
        press("#bulk", "retry-all-copy", TOKEN)
        assert cell(browser, "#message") == "requeued 3 job(s) on copy"
        assert client.zcard("dramatiq:copy.XQ") == 0 and client.llen("dramatiq:copy") == 5
        assert all(client.hexists("dramatiq:copy.msgs", redis_id) for redis_id in later)

        # The history, filtered, and an item's story.
        browser.get(base + "/history")
        rows = browser.find_elements(By.CSS_SELECTOR, "#history tr")[1:]
        [(recorded,)] = catalog_rows(tmp_path, "SELECT COUNT(*) FROM action")
        assert len(rows) == recorded >= 5  # four registered, one verified, ...
        browser.get(base + "/history?action=verify&connector=local&failed=")
        [row] = browser.find_elements(By.CSS_SELECTOR, "#history tr")[1:]
        assert "broken" in row.text and "damaged" in row.text
        browser.get(base + "/history?failed=1")
        assert "Nothing recorded that matches." in cell(browser, "#history")
        browser.get(base + "/items/a2")
        assert cell(browser, 'tr[data-connector="archive"]').split()[1] == "PR"
        assert browser.find_elements(By.CSS_SELECTOR, "#files tr")[1].text.startswith("f.txt")
    finally:
        client.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_a_dashboard_without_actions_is_read_only(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    cli = Cli(
        copying_pair(tmp_path, broker=redis_url), env={"RESOLWE_STORAGE_DASHBOARD_TOKEN": TOKEN}
    )
    cli.ok("migrate")
    client = redis.Redis.from_url(redis_url)
    redis_id = dead_letter(client, "copy", 1, "a1", "failed")
    dashboard, base = start_dashboard(cli, tmp_path)
    try:
        browser.get(base + "/dead")
        assert browser.find_elements(By.CSS_SELECTOR, f'tr[data-id="{redis_id}"]')
        with at_once(browser):
            assert not browser.find_elements(By.CSS_SELECTOR, "form[method=post]")
        # Even with the token: actions are off.
        body = f"queue=copy&id={redis_id}&token={TOKEN}".encode()
        status, text = fetch(base + "/dead/retry", data=body)
        assert status == 403 and "actions are off" in text
        assert client.zcard("dramatiq:copy.XQ") == 1
    finally:
        client.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_allow_actions_without_a_token_is_refused_in_one_line(tmp_path: Path) -> None:
    cli = Cli(copying_pair(tmp_path, broker="redis://127.0.0.1:1/0"))
    outcome = cli("dashboard", "--allow-actions")
    assert "RESOLWE_STORAGE_DASHBOARD_TOKEN" in outcome.error_line


def test_when_the_catalog_stops_answering_the_queues_are_shown_and_the_catalog_said_missing(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    cli.ok("migrate")
    client = redis.Redis.from_url(redis_url)
    client.rpush("dramatiq:copy", "a-queued-job")
    dashboard, base = start_dashboard(cli, tmp_path, "--refresh", "0")
    try:
        browser.get(base + "/")
        assert cell(browser, 'tr[data-queue="copy"] td[data-field="done-5"]') == "0"
        assert "Deletes run." in cell(browser, "#deletes")
        # The catalog's file is no longer a database: every query fails.
        catalog = tmp_path / "catalog.sqlite3"
        for suffix in ("-wal", "-shm"):
            Path(f"{catalog}{suffix}").unlink(missing_ok=True)
        catalog.write_bytes(b"not a database " * 1000)
        browser.get(base + "/")
        assert cell(browser, 'tr[data-queue="copy"] td[data-field="queued"]') == "1"
        assert cell(browser, 'tr[data-queue="copy"] td[data-field="done-5"]') == "–"
        assert "The catalog did not answer" in cell(browser, "#catalog-unavailable")
        assert "not known" in cell(browser, "#deletes"), "never 'Deletes run.' unread"
    finally:
        client.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)
    assert (
        "dashboard: the catalog did not answer: file is not a database"
        in (tmp_path / "dashboard.log").read_text()
    )


def damage(cli: Cli, tmp_path: Path, key: str) -> None:
    """Item ``key`` ingested from ``local``, whose only copy then loses its file: damaged, lost."""
    folder = tmp_path / "local" / key
    folder.mkdir(parents=True)
    (folder / "f.txt").write_text(key * 10)
    cli.ok("ingest", "local", folder, "--key", key)
    (folder / "f.txt").unlink()
    assert "LOST" in cli("verify", key).err


def test_the_damaged_and_lost_counts_are_those_of_the_items_listed_as_such(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    """A removed item (in its grace) with a damaged, lost copy: counted as it is listed."""
    from selenium.webdriver.common.by import By

    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    damage(cli, tmp_path, "broken")
    damage(cli, tmp_path, "gone")
    cli.ok("remove", "gone")
    status = json.loads(cli.ok("status", "--json").out)
    dashboard, base = start_dashboard(cli, tmp_path, "--refresh", "0")
    try:
        browser.get(base + "/")
        [(damaged,)] = catalog_rows(
            tmp_path,
            "SELECT COUNT(DISTINCT file_storage_id) FROM storage_location WHERE status = 'DM'",
        )
        listed = [link.text for link in browser.find_elements(By.CSS_SELECTOR, "#damaged a")]
        assert sorted(listed) == ["broken", "gone"]
        assert cell(browser, 'tr[data-field="damaged"] td.n') == str(damaged) == "2"
        lost = [link.text for link in browser.find_elements(By.CSS_SELECTOR, "#lost a")]
        assert sorted(lost) == ["broken", "gone"]
        assert cell(browser, 'tr[data-field="lost"] td.n') == str(status["lost_items"]) == "2"
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_an_items_page_never_shows_where_a_connector_keeps_its_data(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    """A file found leading outside the root: said so, naming the connector, never its root."""
    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    folder = tmp_path / "local" / "k"
    folder.mkdir(parents=True)
    (folder / "f.txt").write_text("hello")
    cli.ok("ingest", "local", folder, "--key", "k")
    (folder / "f.txt").unlink()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f.txt").write_text("hello")
    (folder / "f.txt").symlink_to(tmp_path / "outside" / "f.txt")
    assert "LOST" in cli("verify", "k").err
    root = str(tmp_path / "local")
    assert root in cli("show", "k").out  # the operator's own command says where
    dashboard, base = start_dashboard(cli, tmp_path, "--refresh", "0")
    try:
        browser.get(base + "/items/k")
        assert "leads outside the root <local>" in cell(browser, "#files")
        assert root not in browser.page_source and str(tmp_path) not in browser.page_source
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_while_redis_is_down_the_pages_say_so_and_show_the_catalog(
    tmp_path: Path, private_redis: PrivateRedis, browser: Any
) -> None:
    """The operator's screen in a broker outage: what the catalog holds, and that Redis is gone."""
    cli = Cli(
        copying_pair(tmp_path, broker=private_redis.url),
        env={"RESOLWE_STORAGE_DASHBOARD_TOKEN": TOKEN},
    )
    damage(cli, tmp_path, "broken")
    dashboard, base = start_dashboard(cli, tmp_path, "--allow-actions", "--refresh", "0")
    try:
        private_redis.stop()
        browser.get(base + "/")
        assert "Internal Server Error" not in browser.page_source
        assert "The broker did not answer" in cell(browser, "#broker-unavailable")
        assert cell(browser, 'tr[data-field="lost"] td.n') == "1"
        assert "broken" in cell(browser, "#lost")
        browser.get(base + "/dead")
        assert "The broker did not answer" in cell(browser, "#broker-unavailable")
        status, text = fetch(
            base + "/dead/retry", data=f"queue=copy&token={TOKEN}".encode(), timeout=30
        )
        assert status == 503 and len(text.splitlines()) == 1 and "broker" in text, text
        private_redis.start()
        browser.get(base + "/")
        assert cell(browser, 'tr[data-queue="copy"] td[data-field="queued"]') == "0"
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
    log = (tmp_path / "dashboard.log").read_text()
    assert "Traceback" not in log, log


def test_every_page_of_a_read_only_dashboard_says_it_is_read_only(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    damage(cli, tmp_path, "broken")  # the history holds a register and a verify
    dashboard, base = start_dashboard(cli, tmp_path, "--refresh", "0")
    try:
        for page in ("/", "/dead", "/history", "/items/broken"):
            browser.get(base + page)
            assert cell(browser, "header .muted") == "read-only", page
            assert 'method="post"' not in browser.page_source, page
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_an_item_whose_key_holds_a_buckets_name_is_named_and_linked_by_its_key(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    """A bucket named ``data`` is taken out of errors; item ``data-1`` keeps its name."""
    from selenium.webdriver.common.by import By

    config = copying_pair(tmp_path, broker=redis_url)
    document = json.loads(config.read_text())
    document["connectors"]["S3"] = {
        "connector": "s3",
        "config": {"bucket": "data", "region_name": "eu-central-1", "priority": 50},
    }
    config.write_text(json.dumps(document))
    cli = Cli(config)
    folder = tmp_path / "local" / "data-1"
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("x")
    cli.ok("ingest", "local", folder, "--key", "data-1")
    client = redis.Redis.from_url(redis_url)
    dead_letter(client, "copy", 1, "data-1", "failed: NoSuchBucket: s3://data/data-1/data.csv")
    dashboard, base = start_dashboard(cli, tmp_path, "--refresh", "0")
    try:
        browser.get(base + "/dead")
        [row] = browser.find_elements(By.CSS_SELECTOR, "#dead tr[data-id]")
        assert row.find_element(By.CSS_SELECTOR, "a").text == "data-1"
        assert "s3://<S3>/data-1/" in row.text and "s3://data" not in browser.page_source
        browser.get(base + "/history")
        [row] = browser.find_elements(By.CSS_SELECTOR, "#history tr")[1:]
        assert row.find_element(By.CSS_SELECTOR, "a").text == "data-1"
        row.find_element(By.CSS_SELECTOR, "a").click()
        assert cell(browser, "h2 code") == "data-1"
    finally:
        client.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)


#: Item keys a producer may choose, each a trap for a page that renders or links it.
HOSTILE_KEYS = (
    "<script>window.pwned = 1</script>",
    '"><img src=x onerror="window.pwned = 1">',
    "javascript:window.pwned = 1",
    "..",
    ".",
    "x/../../dead",
    "q?a=1#frag",
)


def test_hostile_item_keys_are_shown_as_text_and_link_to_their_own_pages(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    """Keys holding markup, ``..`` or ``?#``: shown as written, and each links to its item."""
    from selenium.webdriver.common.by import By

    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    for n, key in enumerate(HOSTILE_KEYS):
        folder = tmp_path / "local" / f"item{n}"
        folder.mkdir(parents=True)
        (folder / '<img src=x onerror="window.pwned = 1">.txt').write_text(key)
        cli.ok("ingest", "local", folder, "--key", key)
        # Its only copy loses its file: damaged and lost, listed on the overview.
        (folder / '<img src=x onerror="window.pwned = 1">.txt').unlink()
        assert "LOST" in cli("verify", key).err
    client = redis.Redis.from_url(redis_url)
    for n, key in enumerate(HOSTILE_KEYS):
        dead_letter(client, "copy", n + 1, key, f"failed: <script>window.pwned = 1</script> {key}")
    dashboard, base = start_dashboard(cli, tmp_path, "--refresh", "0")
    try:
        links: set[tuple[str, str]] = set()
        for page in ("/", "/dead", "/history"):
            browser.get(base + page)  # returns once the page has loaded
            assert browser.execute_script("return window.pwned") is None, page
            with at_once(browser):
                assert not browser.find_elements(By.CSS_SELECTOR, "img"), page
            for link in browser.find_elements(By.CSS_SELECTOR, "a[href^='/items']"):
                links.add((link.text, str(link.get_attribute("href"))))
        assert {text for text, _ in links} >= set(HOSTILE_KEYS)
        for text, href in sorted(links):
            browser.get(href)
            assert browser.execute_script("return window.pwned") is None, href
            with at_once(browser):
                assert not browser.find_elements(By.CSS_SELECTOR, "img"), href
            assert cell(browser, "h2 code") == text, (text, href)
            assert (
                cell(browser, "#files tr:nth-child(2) td")
                == '<img src=x onerror="window.pwned = 1">.txt'
            )
    finally:
        client.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_another_site_cannot_frame_the_dead_letters_and_their_buttons(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    """Clickjacking: a page elsewhere that frames ``/dead`` gets no form to trick one into."""
    from selenium.webdriver.common.by import By

    cli = Cli(
        copying_pair(tmp_path, broker=redis_url), env={"RESOLWE_STORAGE_DASHBOARD_TOKEN": TOKEN}
    )
    cli.ok("migrate")
    client = redis.Redis.from_url(redis_url)
    dead_letter(client, "copy", 1, "a1", "failed")
    dashboard, base = start_dashboard(cli, tmp_path, "--allow-actions", "--refresh", "0")
    try:
        browser.get(base + "/dead")  # the dashboard itself shows the buttons
        assert browser.find_elements(By.CSS_SELECTOR, "button.discard")
        trap = tmp_path / "trap.html"
        trap.write_text(f'<iframe id="trap" src="{base}/dead" width="900" height="600"></iframe>')
        browser.get(trap.as_uri())
        browser.switch_to.frame(browser.find_element(By.ID, "trap"))
        try:
            browser.implicitly_wait(0)
            # Loaded (or refused) once the frame's document is complete.
            wait_for(
                lambda: browser.execute_script("return document.readyState") == "complete",
                "the frame to load",
            )
            assert not browser.find_elements(By.CSS_SELECTOR, "button.discard")
        finally:
            browser.implicitly_wait(5)
            browser.switch_to.default_content()
    finally:
        client.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_on_a_loopback_address_it_answers_only_this_machines_names(
    tmp_path: Path, redis_url: str
) -> None:
    """DNS rebinding: a site whose name resolves to 127.0.0.1 gets no page of it.

    A page of ``evil.example`` whose name an attacker points at 127.0.0.1
    after the page loaded would have the operator's browser read the
    dashboard (item keys, errors) with ``Host: evil.example:PORT``.
    """
    import urllib.error
    import urllib.request

    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    cli.ok("migrate")
    dashboard, base = start_dashboard(cli, tmp_path, "--refresh", "0")
    port = base.rsplit(":", 1)[1]

    def status(host: str, path: str = "/") -> int:
        request = urllib.request.Request(base + path, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        assert status(f"evil.example:{port}") == 400
        assert status("evil.example") == 400
        assert status(f"evil.example:{port}", "/items?key=a1") == 400
        assert status(f"127.0.0.1:{port}") == 200
        assert status(f"localhost:{port}") == 200
        assert status(f"LOCALHOST:{port}", "/healthz") == 200
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_when_the_catalog_stops_answering_the_history_and_an_items_page_say_so(
    tmp_path: Path, redis_url: str
) -> None:
    """Not a bare "Internal Server Error" and a traceback: the page says what is missing."""
    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    damage(cli, tmp_path, "broken")
    dashboard, base = start_dashboard(cli, tmp_path, "--refresh", "0")
    try:
        assert fetch(base + "/history")[0] == 200
        assert fetch(base + "/items?key=broken")[0] == 200
        catalog = tmp_path / "catalog.sqlite3"
        for suffix in ("-wal", "-shm"):
            Path(f"{catalog}{suffix}").unlink(missing_ok=True)
        catalog.write_bytes(b"not a database " * 1000)
        for page in ("/history", "/history?action=verify", "/items?key=broken", "/items/broken"):
            status, text = fetch(base + page)
            assert status == 503, (page, status, text)
            assert 'id="catalog-unavailable"' in text and "The catalog did not answer" in text
            assert "not a database" not in text  # the log says why, not the page
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
    log = (tmp_path / "dashboard.log").read_text()
    assert "Traceback" not in log, log
    assert "dashboard: the catalog did not answer: file is not a database" in log


def test_the_dead_letters_page_says_when_it_lists_only_the_latest_of_them(
    tmp_path: Path, redis_url: str
) -> None:
    """More dead letters than a page lists: it says how many there are, which "all" acts on."""
    from resolwe_storage.dashboard import DEAD_SHOWN

    cli = Cli(
        copying_pair(tmp_path, broker=redis_url), env={"RESOLWE_STORAGE_DASHBOARD_TOKEN": TOKEN}
    )
    cli.ok("migrate")
    client = redis.Redis.from_url(redis_url)
    for n in range(DEAD_SHOWN + 3):
        dead_letter(client, "copy", n + 1, f"a{n}", "failed")
    dead_letter(client, "delete", 1, "a0", "failed")
    dashboard, base = start_dashboard(cli, tmp_path, "--allow-actions", "--refresh", "0")
    try:
        status, text = fetch(base + "/dead")
        assert status == 200
        assert text.count("<tr data-id=") == DEAD_SHOWN + 1
        total = client.zcard("dramatiq:copy.XQ")
        assert f"the latest {DEAD_SHOWN} of the {total} dead letters of copy" in text
        assert "dead letters of delete" not in text  # every one of them is listed
    finally:
        client.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_a_link_cannot_make_a_page_announce_what_was_not_done(
    tmp_path: Path, redis_url: str
) -> None:
    """The note after a retry or discard is the dashboard's own, not a text a link brings."""
    cli = Cli(
        copying_pair(tmp_path, broker=redis_url), env={"RESOLWE_STORAGE_DASHBOARD_TOKEN": TOKEN}
    )
    cli.ok("migrate")
    client = redis.Redis.from_url(redis_url)
    dead_letter(client, "copy", 1, "a1", "failed")
    dashboard, base = start_dashboard(cli, tmp_path, "--allow-actions", "--refresh", "0")
    try:
        forged = "The token expired: renew it at evil.example"
        for page in ("/dead", "/", "/history"):
            status, text = fetch(f"{base}{page}?done={forged.replace(' ', '+')}")
            assert status == 200 and forged not in text and 'id="message"' not in text, page
        # Nor one whose count is not a number (a superscript two is a digit to Python).
        status, text = fetch(base + "/dead?done=discard&count=%C2%B2&queue=copy")
        assert status == 200 and 'id="message"' not in text
        status, text = fetch(base + "/dead/discard", data=f"queue=copy&token={TOKEN}".encode())
        assert status == 200 and "discarded 1 dead letter(s) of copy" in text
        assert client.zcard("dramatiq:copy.XQ") == 0
    finally:
        client.close()
        dashboard.terminate()
        dashboard.wait(timeout=30)
