"""Connectors: moving and describing bytes on storage backends.

Depends on nothing else of ours.
"""
