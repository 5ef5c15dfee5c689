"""Wiring: configuration loading, the command line, the database and broker set-up."""
