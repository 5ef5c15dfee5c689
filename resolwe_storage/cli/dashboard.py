"""``dashboard``: the web pages of queues, dead letters, storage and history."""

from __future__ import annotations

import ipaddress
import logging
import os

import click

from resolwe_storage import telemetry
from resolwe_storage.cli.base import Context, broker_url, cli, pass_context
from resolwe_storage.errors import InputError

#: Where the dashboard listens unless told otherwise: loopback only.
DEFAULT_BIND = "127.0.0.1:8080"
#: The variable holding the token that retry and discard need.
TOKEN_VARIABLE = "RESOLWE_STORAGE_DASHBOARD_TOKEN"
#: Shortest token accepted.
MIN_TOKEN_LENGTH = 16

logger = logging.getLogger(__name__)


@cli.command()
@click.option(
    "--bind",
    metavar="HOST:PORT",
    default=DEFAULT_BIND,
    show_default=True,
    help="Where to serve the pages (and /metrics, /healthz, /readyz); 0.0.0.0:PORT in a container.",
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help=f"Offer retry and discard of dead letters to whoever gives ${TOKEN_VARIABLE}.",
)
@click.option(
    "--metrics-bind",
    metavar="HOST:PORT",
    default="off",
    show_default=True,
    help="Also serve /metrics, /healthz and /readyz here (they are on --bind anyway).",
)
@click.option(
    "--refresh",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Seconds between a page's refreshes (0: never).",
)
@pass_context
def dashboard(
    context: Context, bind: str, allow_actions: bool, metrics_bind: str, refresh: int
) -> None:
    """Serve the dashboard: queues, dead letters, storage, history, an item's story."""
    try:
        address = telemetry.parse_bind(bind, option="--bind")
        extra = telemetry.parse_bind(metrics_bind)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if address is None:
        raise InputError("--bind: expected HOST:PORT")
    token = None
    if allow_actions:
        token = os.environ.get(TOKEN_VARIABLE, "")
        if len(token) < MIN_TOKEN_LENGTH:
            raise InputError(
                f"--allow-actions needs ${TOKEN_VARIABLE} set to a token of at least "
                f"{MIN_TOKEN_LENGTH} characters"
            )
    from workers.broker import make_broker

    broker = make_broker(broker_url(context, "dashboard"))
    import uvicorn

    from resolwe_storage.dashboard import LOOPBACK_HOSTS, Dashboard, make_app

    board = Dashboard(context.config, context.database, broker, token=token, refresh=refresh)
    board.collector.prime()  # the first page need not wait for the catalog's counts
    side = telemetry.serve(extra, board.registry, board.health) if extra else None
    host, port = address
    if not _loopback(host):
        logger.warning(
            "dashboard: listening on %s, beyond this machine; %s",
            host,
            "actions need the token" if token else "read-only",
        )
    click.echo(
        f"dashboard on http://{host}:{port}/ ({'actions on' if token else 'read-only'})",
        err=True,
    )
    try:
        uvicorn.run(
            # On a loopback address only this machine's names: a page elsewhere
            # cannot have the operator's browser read it (DNS rebinding).
            make_app(board, hosts=LOOPBACK_HOSTS if _loopback(host) else None),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    finally:
        if side is not None:
            side.stop()
        broker.close()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
