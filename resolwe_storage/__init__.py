"""The wiring above the packages: configuration, command line, client API, start-up.

==============  =============================================================
module          what it holds
==============  =============================================================
``config``      loading and validating the configuration (SPEC §4)
``wiring``      start-up: the catalog opened, connectors built, the worker
                runtime made from the configuration
``cli``         the command line, one module per command group
``api``         ``StorageService``, for other services
``urls``        URLs of an item's files
``ingest``      registering a local folder as an item
``planout``     ``plan``'s table and JSON
``errors``      errors the user can fix
==============  =============================================================
"""

# Before any module of ours imports dramatiq: it goes without asyncio
# (``workers.deferred``).
import workers  # noqa: F401
