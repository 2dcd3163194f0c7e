"""Plumbing every layer uses: the user-error type, fault-injection hooks, device and dtype choice.

Imports: echo_tts only.
"""
