"""rendezvous: a TCPunch-compatible rendezvous server for hole punching between functions."""

__version__ = "0.1.0"
