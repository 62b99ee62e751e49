"""The `tlr` command line: the parser and entry point (main.py), the commands (listings.py, single_run.py, studies.py,
each imported only when one of its commands runs), what a terminal shows, the key docs, the quickstart.

May import: everything. Nothing imports it.
"""
