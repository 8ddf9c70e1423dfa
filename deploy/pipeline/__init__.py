"""The CosmicAI-style inference pipeline: local runs, AWS deploys, reports."""
