"""Command line: every experiment the app runs can be reproduced headless.

    python -m engine train CONFIG.json [--set optimizer.lr=0.3 ...] [--steps N] --out DIR
    python -m engine train --preset NAME --out DIR
    python -m engine describe CONFIG.json
    python -m engine presets
    python -m engine export CONFIG.json > train.py

Exit codes: 0 the run finished (whatever `stopped` says), 2 a bad config or argument, with a
one-line message on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .callbacks import Checkpoint, JsonlWriter
from .errors import SpecError
from .spec import ExperimentSpec, load_spec, set_path


class UsageError(SpecError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits with 2 too, but we want our one-line format
        raise UsageError(message)


def _value(text: str):
    """--set values are JSON where they parse (numbers, true, null, lists), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _spec(args) -> ExperimentSpec:
    from .presets import load_preset

    if getattr(args, "preset", None):
        if args.config:
            raise UsageError("give either CONFIG.json or --preset, not both")
        config = ExperimentSpec.from_dict(load_preset(args.preset)["config"]).to_dict()
    elif args.config:
        config = load_spec(args.config).to_dict()
    else:
        raise UsageError("a CONFIG.json path (or --preset NAME) is required")
    for item in getattr(args, "set", None) or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.lr=0.3")
        set_path(config, key, _value(text))
    if getattr(args, "steps", None) is not None:
        set_path(config, "training.steps", args.steps)
    return ExperimentSpec.from_dict(config)


def cmd_train(args) -> int:
    from .trainer import Trainer

    spec = _spec(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(spec.to_dict(), f, indent=2)
    trainer = Trainer(spec, callbacks=[JsonlWriter(os.path.join(args.out, "metrics.jsonl")),
                                       Checkpoint(os.path.join(args.out, "model.pt"))])
    try:
        trainer.run()
    except KeyboardInterrupt:
        trainer.cancel()
        trainer.stop("cancelled")
        trainer.run(0)
    summary = trainer.summary()
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    final = summary["final"]
    print(f"{summary['stopped']} after {summary['steps']} steps in {summary['seconds']:.1f}s: "
          f"train_loss={final.get('train_loss')} val_loss={final.get('val_loss')} "
          f"health={summary['health']['status'] if summary['health'] else 'n/a'} -> {args.out}")
    return 0


def cmd_describe(args) -> int:
    from .data import load_dataset
    from .model import describe
    from .trainer import output_dim

    spec = _spec(args)
    data = load_dataset(spec.data, spec.seed)
    print(json.dumps(describe(spec, data.in_shape, output_dim(spec, data)), indent=2))
    return 0


def cmd_presets(args) -> int:
    from .presets import list_presets

    for p in list_presets():
        print(f"{p['name']:<28} {','.join(p['concepts']):<10} {p['title']}")
    return 0


def cmd_export(args) -> int:
    from .export import export_script

    sys.stdout.write(export_script(_spec(args)))
    return 0


def main(argv=None) -> int:
    parser = _Parser(prog="python -m engine", description="Netlab engine, headless.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="train a config; writes config, metrics, summary, model")
    train.add_argument("config", nargs="?")
    train.add_argument("--preset")
    train.add_argument("--set", action="append", metavar="KEY=VALUE")
    train.add_argument("--steps", type=int)
    train.add_argument("--out", required=True)
    train.set_defaults(fn=cmd_train)
    for name, fn, helptext in (("describe", cmd_describe, "layer shapes and parameter counts"),
                               ("export", cmd_export, "a standalone PyTorch script on stdout")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config", nargs="?")
        p.add_argument("--preset")
        p.add_argument("--set", action="append", metavar="KEY=VALUE")
        p.set_defaults(fn=fn)
    sub.add_parser("presets", help="list the bundled presets").set_defaults(fn=cmd_presets)
    try:
        args = parser.parse_args(argv)
        return args.fn(args)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
