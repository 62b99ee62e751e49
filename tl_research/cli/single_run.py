"""The `tlr` commands that build a model: fit, config (an experiment resolved), inspect (a backbone's layer groups),
and after a run predict and export.

The model code (torch, Lightning) is imported by each command once its config or arguments are read: a config error
is answered in well under a second (tests/cli/test_cli.py checks that torch is not imported by then)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from tl_research.backbones.families import inspect_backbone
from tl_research.cli.console import print_result, print_table
from tl_research.cli.keydocs import keys_markdown, regularizer_rows, strategy_rows
from tl_research.config import (
    Experiment,
    apply_overrides,
    drop_other_strategy_options,
    dump_yaml,
    experiment_schema,
    from_mapping,
    read_yaml,
)
from tl_research.errors import ConfigWarning, UserError
from tl_research.paths import writable_file, writable_folder
from tl_research.schema import parse_override


def _overrides(args: argparse.Namespace) -> list[str]:
    """`--set key=value` and bare `key=value` arguments (as a W&B sweep agent or any launcher passes them)."""
    return [*args.set, *getattr(args, "overrides", [])]


def _experiment(args: argparse.Namespace) -> Experiment:
    """The one experiment `fit` runs and `config` shows: a key that would take no effect in it (an option of a
    strategy it does not select) is refused, as every other key that cannot take effect is — but for the YAML's
    options of its own strategy when `--set freeze.strategy=…` switches to another: those are dropped, with a note.
    (A study's base may hold options for its other cells: there it is only a warning.)"""
    overrides = _overrides(args)
    explicit = {".".join(parse_override(o)[0]) for o in overrides}
    raw = apply_overrides(read_yaml(args.config), overrides)
    if "freeze.strategy" in explicit:
        raw, dropped = drop_other_strategy_options(raw, explicit)
        for key in dropped:
            print(f"note: freeze.{key} from {args.config} is dropped: strategy {raw['freeze']['strategy']} does "
                  f"not take it", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        try:
            return from_mapping(raw, Path(args.config).parent)  # plugins: paths relative to the YAML
        except ConfigWarning as exc:
            raise UserError(f"{exc}; remove it or select that strategy") from None


def cmd_fit(args: argparse.Namespace) -> None:
    exp = _experiment(args)
    if args.print_config:
        print(dump_yaml(exp), end="")
        return
    writable_folder(args.out or exp.output_dir, "--out" if args.out else "output_dir")
    from tl_research.pipeline import run

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
    print(dump_yaml(_experiment(args)), end="")


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
    _print_rows(rows)
    print("\nset one with --set freeze.strategy=NAME (and its options with --set freeze.KEY=VALUE)\n")
    print("regularizers, added to the training loss (any number of them):")
    _print_rows(regularizer_rows())
    print("\nturn one on with --set regularize.NAME.KEY=VALUE (or regularize: {NAME: {KEY: VALUE}} in the YAML)")


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"{r['name']}: {r['description']}" + ("" if r["from"] == "built-in" else f" [{r['from']}]"))
        for o in r["options"]:
            print(f"    {o['key']} = {o['default']}  {o['meaning']}".rstrip())


def cmd_predict(args: argparse.Namespace) -> None:
    source = Path(args.input)
    out = writable_file(args.out or source.with_name(f"{source.stem}-predictions.csv"), "--out")
    from tl_research.lifecycle.inference import load_run, predict, read_inputs, write_predictions

    loaded = load_run(args.run)
    ids, inputs = read_inputs(args.input, loaded, args.id_column)
    probs, rate = predict(loaded, inputs, args.batch_size)
    write_predictions(out, ids, probs, loaded.classes)
    print(f"{len(ids)} inputs, {rate:.0f} samples/s -> {out}")


def cmd_export(args: argparse.Namespace) -> None:
    out = writable_folder(args.out or Path(args.run) / "export" / args.format, "--out")
    from tl_research.lifecycle.export import export
    from tl_research.lifecycle.inference import load_run

    loaded = load_run(args.run)
    for f in export(loaded, args.format, out):
        print(f"wrote {f}")
