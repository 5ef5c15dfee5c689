"""Workers: turn one job into storage I/O plus catalog updates.

Depends on ``catalog`` and ``connectors``.
"""
