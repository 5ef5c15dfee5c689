"""The catalog: items, their files, their copies on storage locations, and history.

Stores facts and answers queries. Depends on nothing else of ours.
"""

from catalog.pgdriver import hold_back

# First, before any module of ours imports peewee (``catalog.pgdriver``).
hold_back()
