"""Helpers the test modules share. Test modules import them from here (``from .helpers.x import``),
never from each other; fixtures live in ``tests/conftest.py``."""
