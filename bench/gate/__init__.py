"""The CI gate: a baseline and a candidate run interleaved, each figure decided with a
threshold and a significance test, one exit code.

Imports: every layer below it (core .. report).
"""
