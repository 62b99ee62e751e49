"""The `tlr` commands that list: backbones and datasets, with their offline availability.

They import no deep-learning framework (tests/cli/test_cli.py checks the modules loaded)."""

from __future__ import annotations

import argparse
import json

from tl_research import plugins
from tl_research.backbones import list_backbones
from tl_research.backbones.families import families
from tl_research.cli.console import print_table
from tl_research.data import list_datasets


def cmd_backbones(args: argparse.Namespace) -> None:
    rows = list_backbones(args.pattern)
    if args.json:
        print(json.dumps(rows))
        return
    print_table([[r["name"], "yes" if r["available"] else "no", r.get("install", "")] for r in rows],
                 ["backbone", "offline", "install"])
    if not args.pattern:
        print("\nany timm model works with weights: hub or a local file; list them with: tlr backbones 'timm/*vit*'")
        print("families: " + ", ".join(f"{name}/ ({plugins.origin(build.__module__)})" for name, build in families()))


def cmd_datasets(args: argparse.Namespace) -> None:
    rows = list_datasets()
    if args.json:
        print(json.dumps(rows))
        return
    print_table([[r["name"], r["modality"], "yes" if r["available"] else "no", r.get("install", r["description"]),
                  r["from"]] for r in rows], ["dataset", "modality", "available", "install / description", "from"])
