"""The scheduler: decides what is due, and queues it; it never executes.

==============  =============================================================
module          what it holds
==============  =============================================================
``rules``       the connectors' policies as plain values
``policy``      the rules of SPEC §5 for one item, and why (``explain``): pure
``planning``    the rules over the whole catalog, set-based, ``now`` given
``scan``        one pass: plan, reserve copies, queue jobs per file
``lease``       one scheduler scans at a time, however many replicas run
``loop``        the scheduler process: a scan every interval, under the lease
==============  =============================================================

Depends on ``catalog``, and of ``workers`` only on the queue contract
(``workers.messages``, ``workers.broker``, ``workers.outage``). ``rules``,
``policy`` and ``planning`` read no clock and contact no server.
"""
