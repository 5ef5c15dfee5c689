"""The dashboard: queues, dead letters, storage and history, on pages rendered by the server.

A Starlette application with Jinja2 templates, served by uvicorn
(``resolwe-storage dashboard``). Pages work without JavaScript and
refresh themselves. Every figure is read from Redis or the catalog when the
page is asked for (``facts``), but the catalog's counts on the overview:
those are the read ``/metrics`` serves too, made again in the request where
it is quick and behind the pages where it takes seconds (a catalog of
millions of items), and the page says how old they are.

=========================  ===============================================
page                       shows
=========================  ===============================================
``/``                      queues (queued, delayed, running, dead, oldest
                           wait, actions done lately), live workers, items
                           by status, copies per connector and state with
                           bytes, under-replicated, damaged and lost items,
                           deletes held back
``/dead``                  dead letters: item keys, actor, files, reason,
                           when; retry or discard one or all
``/history``               the latest actions, by action, connector,
                           failed only
``/items/{key}``           one item's story (as ``resolwe-storage show``)
``/metrics``               the catalog and queue gauges (Prometheus)
``/healthz``, ``/readyz``  alive; catalog and broker answer
=========================  ===============================================

Retry and discard are POSTs that need the dashboard started with
``--allow-actions`` and the token of ``RESOLWE_STORAGE_DASHBOARD_TOKEN`` in
the form; otherwise the pages are read-only (no buttons, and a POST is
refused with 403).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import peewee as pw
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from resolwe_storage import telemetry
from resolwe_storage.config import Config
from resolwe_storage.dashboard import facts
from workers.broker import BrokerUnavailable, answering

#: Seconds between a page's refreshes.
DEFAULT_REFRESH_SECONDS = 10
#: Dead letters listed per queue.
DEAD_SHOWN = 100
#: History rows on a page, at most.
HISTORY_LIMIT = 200
TEMPLATES = Path(__file__).parent / "templates"
#: What a catalog that does not answer (down, locked, not a database) raises.
CATALOG_ERRORS = (pw.OperationalError, pw.InterfaceError, pw.DatabaseError)

logger = logging.getLogger(__name__)


@dataclass
class Dashboard:
    """What the pages read from and whether they may act."""

    config: Config
    database: pw.Database
    broker: Any
    #: Token a retry or discard must carry; None: the pages are read-only.
    token: str | None = None
    refresh: int = DEFAULT_REFRESH_SECONDS

    def __post_init__(self) -> None:
        self.redact = facts.Redactor(self.config)
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.filters["size"] = _size
        self.templates.env.filters["age"] = _age
        self.templates.env.filters["item_url"] = _item_url
        self.registry = telemetry.new_registry()
        # The catalog's counts: the overview and /metrics share one read of them.
        self.collector = telemetry.CatalogCollector(self.database, self.broker)
        self.registry.register(self.collector)
        self.health = telemetry.standard_health(self.database, self.broker)

    # -- pages --------------------------------------------------------------

    def _page(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> Response:
        return self.templates.TemplateResponse(
            request,
            template,
            {
                "refresh": self.refresh,
                "actions": self.token is not None,
                "message": done_message(request.query_params),
                **context,
            },
            status_code=status_code,
        )

    def _catalog_unavailable(self, request: Request, exc: Exception) -> Response:
        """A page that needs the catalog, which did not answer: said so (503), why in the log."""
        logger.warning("dashboard: the catalog did not answer: %s", telemetry.first_line(exc))
        return self._page(request, "unavailable.html", status_code=503)

    def overview(self, request: Request) -> Response:
        from workers.monitor import heartbeats

        now = facts.now()
        read = self.collector.catalog_read()
        done = stored = None
        try:
            with self.database.connection_context():
                done = facts.throughput(now)
                if read.facts is not None:
                    stored = facts.storage(self.config, read.facts)
        except CATALOG_ERRORS as exc:
            # The queues are Redis's: shown still, and the catalog's part said missing.
            logger.warning("dashboard: the catalog did not answer: %s", telemetry.first_line(exc))
            stored = None
        queues = workers = scan = None
        try:
            with answering(self.broker):
                queues = facts.queue_rows(self.broker, now, done)
                workers = heartbeats(self.broker)
                scan = facts.last_scan(self.broker)
        except BrokerUnavailable as exc:
            # The catalog's part is shown still, and the queues' said missing.
            logger.warning("dashboard: %s", exc)
        return self._page(
            request,
            "overview.html",
            queues=queues,
            windows=facts.THROUGHPUT_WINDOWS,
            workers=workers,
            storage=stored,
            counted={
                "age": max(0.0, self.collector.clock() - read.at),
                "took": read.took,
                "behind": read.took >= self.collector.inline_seconds,
                "fresh": telemetry.reuse_seconds(
                    read.took,
                    cache_seconds=self.collector.cache_seconds,
                    cost_factor=self.collector.cost_factor,
                ),
            },
            scan=scan,
            now=now,
        )

    def dead(self, request: Request) -> Response:
        from workers.monitor import dead_letters, queue_stats

        try:
            with answering(self.broker):
                found = [
                    letter
                    for queue in facts._queues()
                    for letter in dead_letters(self.broker, queue, limit=DEAD_SHOWN)
                ]
                # A queue with more than a page lists: the page says so, and
                # that "all" acts on every one of them, listed or not.
                more = {
                    stats.queue: stats.dead
                    for stats in queue_stats(self.broker, facts._queues())
                    if stats.dead > DEAD_SHOWN
                }
        except BrokerUnavailable as exc:
            logger.warning("dashboard: %s", exc)
            return self._page(request, "dead.html", letters=None, queues=facts._queues())
        letters = [
            {
                "queue": letter.queue,
                "redis_id": letter.redis_id,
                "died": letter.died,
                "actor": letter.actor,
                "keys": list(letter.keys),
                "files": facts.file_count(letter.actor, letter.args),
                "reason": self.redact(letter.reason),
                "retries": letter.retries,
            }
            for letter in found
        ]
        return self._page(
            request,
            "dead.html",
            letters=letters,
            queues=facts._queues(),
            more=more,
            shown=DEAD_SHOWN,
        )

    def history(self, request: Request) -> Response:
        from catalog.story import action_names, history

        query = request.query_params
        chosen = {
            "action": query.get("action") or None,
            "connector": query.get("connector") or None,
            "failed": query.get("failed") == "1",
        }
        try:
            with self.database.connection_context():
                rows = history(**chosen, limit=HISTORY_LIMIT)
                actions = action_names()
        except CATALOG_ERRORS as exc:
            return self._catalog_unavailable(request, exc)
        return self._page(
            request,
            "history.html",
            rows=[facts.redacted(row, self.redact) for row in rows],
            chosen=chosen,
            # Not ``actions``: that says on every page whether retry and discard are on.
            action_names=actions,
            connectors=sorted(self.config.connectors),
            limit=HISTORY_LIMIT,
        )

    def item(self, request: Request) -> Response:
        from catalog.errors import ItemNotFoundError
        from catalog.story import item_story

        key = request.path_params.get("key") or request.query_params.get("key", "")
        try:
            with self.database.connection_context():
                story = item_story(key)
        except ItemNotFoundError:
            return self._page(request, "missing.html", key=key, status_code=404)
        except CATALOG_ERRORS as exc:
            return self._catalog_unavailable(request, exc)
        story["history"] = [facts.redacted(row, self.redact) for row in story["history"]]
        for location in story["locations"]:
            # A file's problem is a backend's answer, which may say where it keeps the file.
            location["files"] = {
                path: facts.redacted(state, self.redact)
                for path, state in location["files"].items()
            }
            location["locks"] = [facts.redacted(lock, self.redact) for lock in location["locks"]]
        return self._page(request, "item.html", story=story)

    # -- actions ------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        """Retry or discard dead letters: one (``id``) or all of a queue."""
        form = {key: values[0] for key, values in parse_qs((await request.body()).decode()).items()}
        if self.token is None:
            return PlainTextResponse(
                "refused: actions are off (start the dashboard with --allow-actions)\n", 403
            )
        if not hmac.compare_digest(form.get("token", "").encode(), self.token.encode()):
            return PlainTextResponse("refused: wrong or missing token\n", 403)
        queue, what = form.get("queue", ""), request.path_params["what"]
        if what not in ("retry", "discard"):
            return PlainTextResponse(f"no such action: {what!r}\n", 404)
        if queue not in facts._queues():
            return PlainTextResponse(f"no such queue: {queue!r}\n", 400)
        try:
            count = await run_in_threadpool(self._act, what, queue, form.get("id") or None)
        except BrokerUnavailable as exc:
            logger.warning("dashboard: %s", exc)
            return PlainTextResponse(
                f"failed: {exc} (a dead letter is requeued or discarded whole, or not at all)\n",
                503,
            )
        # What was done, not a text: the page says it in its own words
        # (``done_message``), so that a link cannot have it announce anything.
        done = {"done": what, "count": count, "queue": queue}
        return RedirectResponse("/dead?" + urlencode(done), status_code=303)

    def _act(self, what: str, queue: str, redis_id: str | None) -> int:
        from workers.monitor import discard_dead, requeue_dead

        with answering(self.broker):
            if what == "retry":
                return requeue_dead(self.broker, queue, redis_id)
            return discard_dead(self.broker, queue, redis_id)

    # -- machines -----------------------------------------------------------

    def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    def readyz(self, request: Request) -> Response:
        ok, found = self.health.ready()
        return Response(
            json.dumps({"ready": ok, **found}) + "\n",
            status_code=200 if ok else 503,
            media_type="application/json",
        )


#: Headers of every answer: no other site may frame a page (clickjacking of
#: the retry and discard buttons, the token typed into a framed form).
FRAME_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}


#: The names a browser on this machine reaches a dashboard on a loopback address by.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_of(header: str) -> str:
    """The host of a ``Host`` header, without its port: ``[::1]:8080`` -> ``::1``."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _guard(hosts: frozenset[str] | None) -> Any:
    """The middleware of every answer: the frame headers; and, given ``hosts``, only
    requests whose ``Host`` is one of them are answered (400 otherwise)."""

    async def guard(request: Request, call_next: Any) -> Response:
        if hosts is not None and host_of(request.headers.get("host", "")).lower() not in hosts:
            # DNS rebinding: a site whose name an attacker points at 127.0.0.1
            # would read the pages from the operator's own browser.
            response: Response = PlainTextResponse("unexpected Host header", status_code=400)
        else:
            response = await call_next(request)
        response.headers.update(FRAME_HEADERS)
        return response

    return guard


def make_app(dashboard: Dashboard, *, hosts: frozenset[str] | None = None) -> Starlette:
    """The web application of ``dashboard``; ``hosts``: the only ``Host`` names it answers
    (None: any, as behind a proxy or a Kubernetes service)."""
    return Starlette(
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard(hosts))],
        routes=[
            Route("/", dashboard.overview),
            Route("/dead", dashboard.dead),
            Route("/dead/{what:str}", dashboard.act, methods=["POST"]),
            Route("/history", dashboard.history),
            Route("/items", dashboard.item),
            Route("/items/{key:path}", dashboard.item),
            Route("/metrics", dashboard.metrics),
            Route("/healthz", dashboard.healthz),
            Route("/readyz", dashboard.readyz),
        ],
    )


def done_message(query: Mapping[str, str]) -> str | None:
    """The note of a retry or discard that ``act`` redirected with; None for anything else.

    Made of the action, a count and a queue, each checked: a page opened from
    a link someone else made says nothing they wrote ("done=the token expired,
    renew it at ...").
    """
    what, count, queue = query.get("done"), query.get("count", ""), query.get("queue")
    if not (count.isascii() and count.isdigit()) or queue not in facts._queues():
        return None
    if what == "retry":
        return f"requeued {int(count)} job(s) on {queue}"
    if what == "discard":
        return f"discarded {int(count)} dead letter(s) of {queue}"
    return None


def _item_url(key: str) -> str:
    # In the query, not the path: a browser resolves a key's "..", "." (as
    # "%2e" too) or "/" segments in a path, and links to some other page.
    return "/items?" + urlencode({"key": key})


def _size(value: int | None) -> str:
    from workers.telemetry import human_bytes

    return "" if value is None else human_bytes(int(value))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
