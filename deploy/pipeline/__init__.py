"""The CosmicAI-style inference pipeline: local runs, AWS deploys, reports."""

from pathlib import Path

DEFAULT_PREFIX = "rendezvous-pipeline"
"""The name prefix of every AWS resource `pipeline up` makes (its --name)."""

RUNS_FILE = Path("pipeline-runs.json")
"""Where `pipeline run` records its executions for `pipeline report`."""
