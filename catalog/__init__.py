"""The catalog: items, their files, their copies on storage locations, and history.

Stores facts and answers queries. Depends on nothing else of ours.
"""
