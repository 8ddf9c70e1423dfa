"""Runnable examples shipped with rendezvous (importable so the CLI and Lambdas share code)."""
