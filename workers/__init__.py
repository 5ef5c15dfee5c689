"""The workers: the queue contract, the Dramatiq actors, and the operations they run.

==============  =============================================================
module          what it holds
==============  =============================================================
``messages``    the queue contract: queues, actors, arguments, the builders
                that cut work into jobs; the format for other services
``broker``      the broker (Redis, or in process), batched enqueues, the
                pending-work markers, one line per outage
``monitor``     what the queues hold, for operators (counts, dead letters)
``actors``      the Dramatiq actors, their retry and time-limit rules
``runtime``     what a worker process runs with (built by the caller)
``process``     a worker process: start it, stop it
``operations``  what one job does: copy, verify, delete, repair
``verify``      re-hashing a copy; ``confirm``: confirming copies before a delete
``errors``      the errors of the operations
``deferred``    dramatiq's import without asyncio, until something uses it
==============  =============================================================

Depends on ``catalog`` and ``connectors``. The scheduler imports only
``messages`` and ``broker``, which reach nothing of the operations.
"""

from workers.deferred import defer_asyncio

# First, before any module of ours imports dramatiq (``workers.deferred``).
defer_asyncio()
