"""Errors of the workers and of their queue contract.

::

    workers.broker.BrokerUnavailable
                             the broker (Redis) did not answer; nothing that
                             needed it was done (the command line's one line;
                             with the broker, for the scheduler's sake, which
                             imports the queue contract and nothing else)
    connectors.errors.PermanentError
    └── NoSourceError        no good copy of the item is left to copy from
    connectors.errors.TransientError
    ├── LocationGoneError    the copy chosen a moment ago no longer counts
    └── ItemChangedError     a file changed while it was copied

Jobs decide retry versus give up by an error's ``transient`` flag, as for
the connectors' own errors; ``workers.actors.expected_failures`` lists what
a job may end with in normal operation.
"""

from __future__ import annotations

from connectors.errors import PermanentError, TransientError


class NoSourceError(PermanentError):
    """No ``OK`` copy of the item is left to copy from."""


class LocationGoneError(TransientError):
    """The location chosen a moment ago is no longer ``OK``; choosing again may work."""


class ItemChangedError(TransientError):
    """A file changed (a new version registered) while it was copied; copy it again."""
