"""Readers of exports: CSV, Parquet and SQL tables mapped onto the data contract.

All file and database I/O of the project's inputs lives here; `features` stays pure.
"""
