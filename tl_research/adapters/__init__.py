"""The only places that touch a dependency's private API, one small module per dependency, each access commented
with why no public API serves and bounded in pyproject below the dependency's next major release. Everything
else in the package uses public APIs only (tests/test_private_api.py checks it).

May import: nothing of the package (only the dependencies themselves).
"""
