"""The one copy of every test helper: homes with a real daemon, fakes, time helpers.

Importable as ``tests.support`` because pytest puts the repository root on ``sys.path``
(``pythonpath = ["."]`` in pyproject.toml).
"""
