"""The CosmicAI-style redshift inference pipeline: Initialize -> Distributed Map -> Summarize.

The three Lambda handlers (``initialize``, ``worker``, ``summarize``) run unchanged on AWS
and locally: storage is an S3 bucket or a local directory behind one interface.
"""
