"""Errors of the wiring layer: configuration and command-line input.

::

    UserError            anything the user can fix; printed as one line, exit 1
    ├── ConfigError      the configuration file or environment is wrong
    └── InputError       a command's input (document, folder, key) is wrong

Errors of the other packages (``catalog.errors.CatalogError`` ...) are shown
to the user the same way by the command line.
"""


class UserError(Exception):
    """An error the user can fix; the message is one line naming what was wrong."""


class ConfigError(UserError):
    """The configuration is malformed or does not validate."""


class InputError(UserError):
    """A command's input is malformed or contradicts the catalog."""
