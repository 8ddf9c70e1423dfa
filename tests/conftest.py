"""Fixtures shared by every test area live in the area's own conftest; see facilities.py."""
