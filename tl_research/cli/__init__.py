"""The `tlr` command line: parser, one function per command, what a terminal shows, the key docs, the quickstart. May
import everything; nothing imports it.

May import:
"""
