"""The `tlr` commands that build a model: fit, config (an experiment resolved), inspect (a backbone's layer groups),
and after a run predict and export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tl_research.backbones.families import inspect_backbone
from tl_research.cli.console import print_result, print_table
from tl_research.cli.keydocs import keys_markdown, strategy_rows
from tl_research.config import dump_yaml, experiment_schema, load_experiment
from tl_research.errors import UserError
from tl_research.lifecycle.export import export
from tl_research.lifecycle.inference import load_run, predict, read_inputs, write_predictions
from tl_research.run import run


def _overrides(args: argparse.Namespace) -> list[str]:
    """`--set key=value` and bare `key=value` arguments (as a W&B sweep agent or any launcher passes them)."""
    return [*args.set, *getattr(args, "overrides", [])]


def cmd_fit(args: argparse.Namespace) -> None:
    exp = load_experiment(args.config, _overrides(args))
    if args.print_config:
        print(dump_yaml(exp), end="")
        return
    result = run(exp, args.out, restart=args.restart)
    if result.metrics:  # empty in the extra processes of a DDP run: rank 0 reports
        print_result(result.metrics)


def cmd_config(args: argparse.Namespace) -> None:
    if args.schema:
        print(json.dumps(experiment_schema(), indent=2))
        return
    if args.keys:
        print(keys_markdown(), end="")
        return
    if not args.config:
        raise UserError("config: name an experiment YAML (or pass --schema or --keys)")
    print(dump_yaml(load_experiment(args.config, _overrides(args))), end="")


def cmd_inspect(args: argparse.Namespace) -> None:
    info = inspect_backbone(args.backbone, args.coarse)
    if args.json:
        print(json.dumps(info))
        return
    print(f"{info['backbone']}: {len(info['groups'])} layer groups, {info['num_params']:,} parameters "
          f"(freeze depth k freezes groups 0..k-1)")
    print_table([[g["index"], g["name"], f"{g['num_params']:,}"] for g in info["groups"]], ["index", "name", "params"])


def cmd_strategies(args: argparse.Namespace) -> None:
    rows = strategy_rows()
    if args.json:
        print(json.dumps(rows, default=str))
        return
    for r in rows:
        print(f"{r['name']}: {r['description']}")
        for o in r["options"]:
            print(f"    {o['key']} = {o['default']}  {o['meaning']}".rstrip())
    print("\nset one with --set freeze.strategy=NAME (and its options with --set freeze.KEY=VALUE)")


def cmd_predict(args: argparse.Namespace) -> None:
    loaded = load_run(args.run)
    ids, inputs = read_inputs(args.input, loaded)
    probs, rate = predict(loaded, inputs, args.batch_size)
    source = Path(args.input)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}-predictions.csv")
    write_predictions(out, ids, probs, loaded.classes)
    print(f"{len(ids)} inputs, {rate:.0f} samples/s -> {out}")


def cmd_export(args: argparse.Namespace) -> None:
    loaded = load_run(args.run)
    out = Path(args.out) if args.out else Path(args.run) / "export" / args.format
    for f in export(loaded, args.format, out):
        print(f"wrote {f}")
