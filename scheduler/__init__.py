"""The scheduler: decides which copies, deletes and verifications are due.

Depends only on ``catalog``. Decisions are pure or set-based, with ``now``
passed in; the scheduler enqueues and never executes.
"""
