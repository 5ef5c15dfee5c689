"""``queues``: jobs per queue on Redis, dead letters, retrying them."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from resolwe_storage.cli.base import Context, broker_url, cli, pass_context
from resolwe_storage.errors import InputError


@cli.command()
@click.option(
    "--dead",
    "dead_limit",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="List this many of the most recently dead-lettered jobs per queue.",
)
@click.option(
    "--retry-dead",
    is_flag=True,
    help="Put the dead-lettered jobs back on their queues (retries reset), then show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts and jobs as JSON.")
@pass_context
def queues(context: Context, dead_limit: int, retry_dead: bool, as_json: bool) -> None:
    """Jobs per queue on Redis: queued, delayed for a retry, running, dead-lettered."""
    import redis
    from dramatiq.brokers.redis import RedisBroker

    from workers.broker import make_broker
    from workers.messages import QUEUES
    from workers.monitor import dead_letters, live_workers, queue_stats, requeue_dead

    broker = make_broker(broker_url(context, "queues"))
    assert isinstance(broker, RedisBroker)
    requeued = 0
    try:
        if retry_dead:
            requeued = sum(requeue_dead(broker, queue) for queue in QUEUES)
        stats = queue_stats(broker, QUEUES)
        dead = [
            letter
            for queue in QUEUES
            for letter in (dead_letters(broker, queue, limit=dead_limit) if dead_limit else [])
        ]
        workers = live_workers(broker)
    except redis.RedisError as exc:
        raise InputError(f"queues: the broker did not answer: {exc}") from None
    finally:
        broker.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "workers": workers,
                    "requeued": requeued,
                    "queues": [row._asdict() for row in stats],
                    "dead": [
                        {**asdict(letter), "died": letter.died.isoformat()} for letter in dead
                    ],
                }
            )
        )
        return
    if retry_dead:
        click.echo(f"requeued {requeued} dead-lettered job(s)")
    click.echo(f"{workers} worker process(es) alive")
    click.echo(f"{'queue':<8} {'queued':>8} {'delayed':>8} {'running':>8} {'dead':>8}")
    for row in stats:
        click.echo(
            f"{row.queue:<8} {row.queued:>8} {row.delayed:>8} {row.running:>8} {row.dead:>8}"
        )
    for letter in dead:
        arguments = ", ".join(json.dumps(arg) for arg in letter.args)
        keys = f" of {', '.join(repr(key) for key in letter.keys)}" if letter.keys else ""
        click.echo(
            f"dead {letter.died:%Y-%m-%dT%H:%M:%SZ} {letter.queue}: "
            f"{letter.actor}({arguments}){keys} after {letter.retries} retries"
            + (f": {letter.reason}" if letter.reason else "")
        )
