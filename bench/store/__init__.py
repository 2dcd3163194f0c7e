"""The run directory: manifest, records.jsonl and scores.jsonl (fsynced), the derived parquet
table, audio, and the history index of runs.

Imports: bench.core.
"""
