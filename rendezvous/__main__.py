"""``python -m rendezvous serve``."""

from rendezvous.cli import main

main()
