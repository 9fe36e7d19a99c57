"""Command line: every experiment the app runs can be reproduced headless.

    python -m engine train CONFIG.json [--set optimizer.lr=0.3 ...] [--steps N] [--threads N] --out DIR
    python -m engine train --preset NAME --out DIR
    python -m engine describe CONFIG.json
    python -m engine presets
    python -m engine export CONFIG.json > train.py
    python -m engine from-tfp 'https://playground.tensorflow.org/#activation=tanh&...'
    python -m engine runs [--json]             # the runs the store holds (NETLAB_HOME)
    python -m engine surface rosenbrock --optimizer sgd --lr 0.001 --momentum 0.9 \
        --steps 2000 --start -1.5,2

Exit codes: 0 the run finished (whatever `stopped` says), 2 a bad config or argument, with a
one-line message on stderr, 1 an internal error (a bug: still one line, never a traceback).
Every file and value from the command line is read through engine.core.inputs, with its bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

from .core.errors import SpecError
from .core.inputs import NotJSON, env_int, parse_json, short
from .core.spec import ExperimentSpec, load_spec, set_path
from .runs.store import CHECKPOINT_EVERY_S
from .train.callbacks import Checkpoint, JsonlWriter

# The same cap as the web server (serve/runs.py): a 200 x 8192 stack is 13.4 billion parameters,
# which the OS would kill for memory instead of answering.
DEFAULT_MAX_PARAMS = 2_000_000
MAX_SET_VALUE = 64 * 1024  # characters of one --set value


class UsageError(SpecError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits with 2 too, but we want our one-line format
        raise UsageError(_cut(message))


def _cut(text: str, limit: int = 300) -> str:
    """One short line: argparse quotes the bad value in full (a 5,000-digit --steps)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _integer(text: str) -> int:
    """argparse type for counts: at most 20 digits (int() of 5,000 digits raises ValueError)."""
    body = text.strip().removeprefix("-")
    if not body.isdecimal() or len(body) > 20:
        raise argparse.ArgumentTypeError(f"{short(text, 40)} is not an integer of at most 20 "
                                         "digits")
    return int(text)


def _value(key: str, text: str):
    """--set values are JSON where they parse (numbers, true, null, lists), else strings; JSON
    that breaks a bound (a 5,000-digit number, deep nesting) is an error, not a string."""
    try:
        return parse_json(text, f"--set {short(key, 60)[1:-1]}", MAX_SET_VALUE)
    except NotJSON:
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
            raise UsageError(f"--set {short(item)}: expected KEY=VALUE, e.g. optimizer.lr=0.3")
        set_path(config, key, _value(key, text))
    if getattr(args, "steps", None) is not None:
        set_path(config, "training.steps", args.steps)
    return ExperimentSpec.from_dict(config)


def _prepare_out(out: str) -> None:
    """Create --out before anything trains, so a bad folder is an argument error (exit 2), not
    a traceback. Writing config.json into it, next, proves it writable."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out: cannot write to {short(out)}: it is an existing file, not a "
                         "folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out: cannot write to {short(out)}: {e.strerror or e}") from None


def _max_params(args) -> int:
    if args.max_params is not None:
        if args.max_params < 1:
            raise UsageError(f"--max-params {args.max_params} is not allowed: expected an "
                             "integer >= 1")
        return args.max_params
    return env_int("NETLAB_MAX_PARAMS", DEFAULT_MAX_PARAMS)


def _write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def _threads(args) -> int:
    """torch's intra-op threads for training: 1 unless asked (--threads, else
    NETLAB_TORCH_THREADS), as the app does. These models are small: on a busy 2-core machine
    torch's default (one per core) was measured 9x slower on the vanishing_sigmoid preset
    (13.2 s against 1.5 s), its threads waiting on each other."""
    threads = args.threads if args.threads is not None else env_int("NETLAB_TORCH_THREADS", 1)
    if threads < 1:
        raise UsageError(f"--threads {threads} is not allowed: expected an integer >= 1")
    return threads


def cmd_train(args) -> int:
    import torch

    from .train.trainer import Trainer

    torch.set_num_threads(_threads(args))
    spec = _spec(args)
    max_params = _max_params(args)
    _prepare_out(args.out)
    try:
        _write_json(os.path.join(args.out, "config.json"), spec.to_dict())
        callbacks = [JsonlWriter(os.path.join(args.out, "metrics.jsonl")),
                     Checkpoint(os.path.join(args.out, "model.pt"))]
        if not args.no_store:  # the run store too (engine/runs/store.py): `runs` lists it
            from .runs.store import RunStore, StoreWriter
            callbacks.append(StoreWriter(RunStore(), name=args.name or args.preset or
                                         os.path.basename(os.path.normpath(args.out)),
                                         checkpoint_every=args.checkpoint_every))
        if args.tensorboard:
            from .runs.tensorboard import TensorBoardWriter
            callbacks.append(TensorBoardWriter(args.tensorboard))
        trainer = Trainer(spec, max_params=max_params, callbacks=callbacks)
        try:
            trainer.run()
        except KeyboardInterrupt:
            trainer.cancel()
            trainer.stop("cancelled")
            trainer.run(0)
        summary = trainer.summary()
        _write_json(os.path.join(args.out, "summary.json"), summary)
    except OSError as e:  # the disk filled up, the folder was removed during the run, ...
        raise UsageError(f"--out: cannot write to {short(e.filename or args.out)}: "
                         f"{e.strerror or e}") from None
    final = summary["final"]
    print(f"{summary['stopped']} after {summary['steps']} steps in {summary['seconds']:.1f}s: "
          f"train_loss={final.get('train_loss')} val_loss={final.get('val_loss')} "
          f"health={summary['health']['status'] if summary['health'] else 'n/a'} -> {args.out}")
    return 0


def cmd_runs(args) -> int:
    """The runs in the store: JSON (--json) or one line each."""
    from .runs.store import RunStore

    store = RunStore()
    found = store.runs()
    for line in ([store.notice] if store.notice else []) + store.damaged:  # the rest listed
        print(f"warning: {line}", file=sys.stderr)
    if args.tensorboard is not None and not args.tensorboard.strip():
        raise UsageError("--tensorboard needs a folder to write the event files to")
    if args.tensorboard:
        from .runs.tensorboard import write_events
        for r in found:
            write_events(store.rows(r["id"]), os.path.join(args.tensorboard, _folder(r)))
        print(f"{len(found)} runs written for TensorBoard: tensorboard --logdir "
              f"{args.tensorboard}", file=sys.stderr)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for r in found:
        final = r["final"]
        print(f"{r['id'][:8]}  {r['status']:<8}  {r['name'][:40]:<40}  step {final['step']}  "
              f"val_loss={final['val_loss']}")
    if not found:
        print(f"no runs in {store.where}")
    return 0


def _folder(run: dict) -> str:
    """A stored run's TensorBoard folder: its name made safe for a path, and its short id."""
    import re
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', run['name'])[:60]}-{run['id'][:8]}"


def cmd_resume(args) -> int:
    """Go on with a stored run from its last checkpoint, to its planned end (or --steps more
    once it has ended), recording into the same run."""
    import torch

    from .runs.store import RunStore, resume

    torch.set_num_threads(_threads(args))
    store = RunStore()
    if not re.fullmatch(r"[0-9a-f]{4,32}", args.run or ""):
        raise UsageError(f"run {short(args.run, 40)}: expected a run's id or its first 4 or more "
                         "characters (0-9, a-f); `python -m engine runs` lists them")
    matches = [r["id"] for r in store.runs() if r["id"].startswith(args.run)]
    if len(matches) != 1:
        raise UsageError(f"run {args.run!r}: {'no stored run' if not matches else 'several runs'}"
                         " has that id; `python -m engine runs` lists them")
    trainer = resume(store, matches[0], max_params=_max_params(args))
    start = trainer.step_count
    if trainer.done:
        if not args.steps:
            raise UsageError(f"run {matches[0][:8]} has ended ({trainer.stopped}); give --steps N "
                             "to train it N steps further")
        try:
            trainer.extend(args.steps)
        except ValueError as e:
            raise UsageError(f"run {matches[0][:8]} cannot go on: {e}") from None
    try:
        trainer.run(args.steps)  # after extend(steps), the same as running to the new end
    except KeyboardInterrupt:
        trainer.cancel()
        trainer.stop("cancelled")
        trainer.run(0)
    summary = trainer.summary()
    print(f"{summary['stopped']}: steps {start} -> {summary['steps']}, val_loss="
          f"{summary['final'].get('val_loss')} (run {matches[0][:8]} in {store.where})")
    return 0


def cmd_sweep(args) -> int:
    """Train every variant of a grid or random search (batched where they share a shape) and
    write results.json: one row per variant (changes, seed, final metrics, health, run id)."""
    import torch

    from .runs import sweep

    torch.set_num_threads(_threads(args))
    base = _spec(args)
    grid = sweep.parse_grid(args.grid)
    ranges = dict(sweep.parse_range(r) for r in args.range or ())
    seeds = sweep.parse_seeds(args.seeds) if args.seeds else None
    if not grid and not ranges and not seeds and not args.folds:
        raise UsageError("nothing to sweep: give --grid KEY=V1,V2,..., --seeds, --folds or "
                         "--random N with --range")
    variants = sweep.plan(base, grid, seeds, args.random or 0, ranges, args.search_seed,
                          args.folds or 0)
    _prepare_out(args.out)
    max_params = _max_params(args)
    store = None
    if not args.no_store:
        from .runs.store import RunStore
        store = RunStore()
    name = args.name or os.path.basename(os.path.normpath(args.out))
    if args.asha and args.backend != "ray":
        raise UsageError("--asha stops trials early on Ray: give --backend ray as well")
    if args.backend == "ray":
        from .runs.ray_backend import run_on_ray
        result = run_on_ray(variants, max_params=max_params, asha=args.asha, store=store,
                            name=name)
    else:
        result = sweep.run(variants, batched=not args.one_by_one, store=store, name=name,
                           max_params=max_params,
                           progress=lambda done, total: print(f"{done}/{total} variants trained",
                                                              file=sys.stderr))
    result = {"base": base.to_dict(), "grid": grid, "ranges": {k: list(r) for k, r in
                                                               ranges.items()},
              "seeds": seeds or [base.seed], "folds": args.folds or 0, **result}
    try:
        _write_json(os.path.join(args.out, "results.json"), result)
    except OSError as e:
        raise UsageError(f"--out: cannot write to {short(args.out)}: {e.strerror or e}") from None
    key = "val_loss" if any(r["final"]["val_loss"] is not None for r in result["variants"]) \
        else "train_loss"
    for r in result["variants"]:
        mark = "*" if r["index"] == result["best"] else " "
        print(f"{mark} {r['label'][:60]:<60} {key}={_fmt(r['final'][key])} "
              f"{r['health'] or r['stopped']}")
    batched = sum(g["size"] for g in result["groups"] if g["batched"])
    print(f"{len(result['variants'])} variants ({batched} batched) in {result['seconds']:.1f}s "
          f"-> {os.path.join(args.out, 'results.json')}")
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def cmd_describe(args) -> int:
    from .data.datasets import load_dataset
    from .nn.model import describe
    from .train.trainer import output_dim

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
    from .io.export import export_script

    sys.stdout.write(export_script(_spec(args)))
    return 0


def cmd_from_tfp(args) -> int:
    """A TensorFlow Playground link -> its config JSON on stdout, the notes on stderr."""
    from .io.tfp import from_tfp

    config, notes = from_tfp(args.url)
    print(json.dumps(config, indent=2))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _start(text: str) -> list[float]:
    """argparse type for --start X,Y."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short(text, 40)} is not two numbers X,Y (e.g. "
                                         "1,1 or -1.5,2)") from None


def _surface_options() -> dict[str, list[str]]:
    """--NAME options of the surface command: each parameter of a surface, optimizer or
    schedule, with the registries that have it."""
    from .core.registry import OPTIMIZERS, SCHEDULES
    from .lab.surfaces import SURFACES

    found: dict[str, list[str]] = {}
    for kind, registry in (("surface", SURFACES), ("optimizer", OPTIMIZERS),
                           ("schedule", SCHEDULES)):
        for entry in registry:
            for param in entry.params:
                if kind not in found.setdefault(param.name, []):
                    found[param.name].append(kind)
    return found


def cmd_surface(args) -> int:
    """A walk on a 2-D surface as JSON: the trajectory [[x, y, f], ...] and what theory says."""
    from .core.registry import OPTIMIZERS, SCHEDULES
    from .lab.surfaces import SURFACES, closed_form, walk

    given = {k: _value(k, v) for k, v in (args.param or [])}
    surface, optimizer = SURFACES[args.name], OPTIMIZERS[args.optimizer]
    schedule = SCHEDULES[args.schedule]
    params = {k: v for k, v in given.items() if surface.param(k) is not None}
    opt = {k: v for k, v in given.items() if optimizer.param(k) is not None}
    sched = {k: v for k, v in given.items() if schedule.param(k) is not None}
    unused = set(given) - set(params) - set(opt) - set(sched)
    if unused:  # --momentum with adam would be ignored silently: say so instead
        raise UsageError(f"--{sorted(unused)[0]} is not a parameter of {args.name}, "
                         f"{optimizer.key} or {schedule.key}")
    result = walk(args.name, {"name": optimizer.key, **opt}, args.steps, args.start, params,
                  {"name": schedule.key, **sched}, args.seed)
    result["closed_form"] = closed_form(args.name, params, result["optimizer"])
    print(json.dumps(result))
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per job, each added by its own function below."""
    top = _Parser(prog="python -m engine", description="Netlab engine, headless.")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_train, _add_runs, _add_sweep, _add_resume, _add_small, _add_surface):
        add(sub)
    return top


def _add_train(sub) -> None:
    """train: a config or preset, written to --out and recorded in the store."""
    train = sub.add_parser("train", help="train a config; writes config, metrics, summary, model")
    train.add_argument("config", nargs="?")
    train.add_argument("--preset")
    train.add_argument("--set", action="append", metavar="KEY=VALUE")
    train.add_argument("--steps", type=_integer)
    train.add_argument("--out", required=True)
    train.add_argument("--threads", type=_integer, metavar="N",
                       help="torch threads for training (default: NETLAB_TORCH_THREADS, else 1)")
    train.add_argument("--max-params", type=_integer, metavar="N",
                       help=f"refuse models with more parameters (default: NETLAB_MAX_PARAMS, "
                            f"else {DEFAULT_MAX_PARAMS:,})")
    train.add_argument("--name", help="the run's name in the store (default: --out's folder)")
    train.add_argument("--no-store", action="store_true",
                       help="do not record the run in the store (NETLAB_HOME/runs.sqlite)")
    train.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard event files "
                       "there (tensorboard --logdir DIR)")
    train.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_EVERY_S,
                       metavar="SECONDS", help="checkpoint the stored run at most this often "
                       f"(default {CHECKPOINT_EVERY_S:g}; always at the end)")
    train.set_defaults(fn=cmd_train)

def _add_runs(sub) -> None:
    """runs: what the store holds."""
    runs = sub.add_parser("runs", help="the runs the store holds (NETLAB_HOME, default "
                          "~/.netlab)")
    runs.add_argument("--json", action="store_true", help="as JSON: id, name, spec, status, "
                      "summary and final metrics of each")
    runs.add_argument("--tensorboard", metavar="DIR", help="write every stored run's metrics as "
                      "TensorBoard event files, one folder per run, in DIR")
    runs.set_defaults(fn=cmd_runs)

def _add_sweep(sub) -> None:
    """sweep: a grid, random search, seeds or folds of one experiment."""
    sweep = sub.add_parser("sweep", help="train a grid or random search of variants at once; "
                           "writes results.json")
    sweep.add_argument("config", nargs="?")
    sweep.add_argument("--preset")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE", help="change the base")
    sweep.add_argument("--steps", type=_integer)
    sweep.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                       help="values of one setting (any dotted key); several --grid multiply")
    sweep.add_argument("--seeds", help="each setting once per seed: 0-4 or 0,3,7 (the data "
                       "stays the base run's)")
    sweep.add_argument("--random", type=_integer, metavar="N", help="N random draws from the "
                       "--grid values and --range intervals instead of every combination")
    sweep.add_argument("--range", action="append", metavar="KEY=[log:]LOW..HIGH")
    sweep.add_argument("--search-seed", type=_integer, default=0)
    sweep.add_argument("--folds", type=_integer, metavar="K", help="k-fold cross-validation")
    sweep.add_argument("--out", required=True)
    sweep.add_argument("--name", help="the runs' name in the store (default: --out's folder)")
    sweep.add_argument("--no-store", action="store_true")
    sweep.add_argument("--one-by-one", action="store_true", help="train each variant alone "
                       "(slower; the reference the batched path matches)")
    sweep.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="ray: one trial per variant on a Ray cluster (RAY_ADDRESS; a local "
                       "Ray otherwise), needs `pip install -r requirements-ray.txt`")
    sweep.add_argument("--asha", action="store_true", help="with --backend ray: stop bad "
                       "trials early (ASHA)")
    sweep.add_argument("--threads", type=_integer, metavar="N")
    sweep.add_argument("--max-params", type=_integer, metavar="N")
    sweep.set_defaults(fn=cmd_sweep)

def _add_resume(sub) -> None:
    """resume: a stored run from its last checkpoint."""
    go_on = sub.add_parser("resume", help="continue a stored run from its last checkpoint")
    go_on.add_argument("run", help="the run's id, or its first characters (`runs` lists them)")
    go_on.add_argument("--steps", type=_integer, help="train only this many steps (a run that "
                       "has ended: this many more)")
    go_on.add_argument("--threads", type=_integer, metavar="N")
    go_on.add_argument("--max-params", type=_integer, metavar="N")
    go_on.set_defaults(fn=cmd_resume)

def _add_small(sub) -> None:
    """describe, export, presets and from-tfp: one answer on stdout each."""
    for name, fn, helptext in (("describe", cmd_describe, "layer shapes and parameter counts"),
                               ("export", cmd_export, "a standalone PyTorch script on stdout")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config", nargs="?")
        p.add_argument("--preset")
        p.add_argument("--set", action="append", metavar="KEY=VALUE")
        p.set_defaults(fn=fn)
    sub.add_parser("presets", help="list the bundled presets").set_defaults(fn=cmd_presets)
    tfp = sub.add_parser("from-tfp", help="a TensorFlow Playground link as a config (JSON on "
                         "stdout, what differs on stderr)")
    tfp.add_argument("url", help="the link, or only its part after '#' (quote it: it holds &)")
    tfp.set_defaults(fn=cmd_from_tfp)

def _add_surface(sub) -> None:
    """surface: an optimizer walking a 2-D test surface."""
    surface = sub.add_parser("surface", help="walk an optimizer on a 2-D test surface (JSON "
                             "with the trajectory)")
    surface.add_argument("name", help="quadratic, rosenbrock, beale, saddle, himmelblau or "
                         "noisy_bowl")
    surface.add_argument("--optimizer", default="sgd")
    surface.add_argument("--schedule", default="constant")
    surface.add_argument("--steps", type=_integer, default=200)
    surface.add_argument("--start", type=_start, help="X,Y (default: the surface's own)")
    surface.add_argument("--seed", type=_integer, default=0, help="seeds the gradient noise")
    for name, kinds in _surface_options().items():  # --lr, --momentum, --kappa, --gamma, ...
        surface.add_argument(f"--{name}", dest="param", action="append", metavar="VALUE",
                             type=lambda text, name=name: (name, text),
                             help=f"a parameter of the {' or '.join(kinds)}")
    surface.set_defaults(fn=cmd_surface)

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for k, arg in enumerate(argv[:-1]):  # "--start -1.5,2": argparse would read an option
        if arg == "--start" and argv[k + 1].startswith("-"):
            argv[k:k + 2] = [f"--start={argv[k + 1]}"]
            break
    try:
        args = parser().parse_args(argv)
        return args.fn(args)
    except SpecError as e:
        print(f"error: {_cut(e, 2000)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last resort: a bug, still reported in one line
        print(f"error: internal error ({type(e).__name__}): {_cut(e)}; please report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
