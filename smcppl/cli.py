"""Command line: ``smcppl run MODEL`` and ``smcppl demo``.

``smcppl run MODEL`` samples a zoo model (``smcppl run eight_schools``) or a user model given as
``path/to/file.py:function`` with data from a CSV, JSON or NPZ file (``--data``), writes the ArviZ
export as netCDF (``--out``, default ``./<model>_results.nc``) and diagnostic plots (``--plots DIR``).
``smcppl demo`` is the quickstart: a bimodal posterior (checked against its exact mode weights and
evidence) and a logistic regression on real data, with results and plots written to a folder.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main"]


class CLIError(Exception):
    pass


def _zoo_help():
    from smcppl.models.zoo import ZOO

    width = max(map(len, ZOO))
    return "\n".join(f"  {name:<{width}}  {entry.description}" for name, entry in ZOO.items())


def _load_model(spec: str):
    from smcppl.models.zoo import ZOO

    if spec in ZOO:
        return ZOO[spec].model, ZOO[spec].data(), ZOO[spec]
    if ":" not in spec:
        raise CLIError(f"MODEL must be a zoo name ({', '.join(sorted(ZOO))}) or path/to/file.py:function, "
                       f"got {spec!r}.")
    path, func = spec.rsplit(":", 1)
    if not os.path.isfile(path):
        raise CLIError(f"Model file {path!r} does not exist.")
    mod_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:
        raise CLIError(f"Importing {path!r} failed: {type(e).__name__}: {e}") from e
    if not hasattr(module, func):
        raise CLIError(f"{path!r} has no function {func!r}; functions there: "
                       f"{[n for n in dir(module) if callable(getattr(module, n)) and not n.startswith('_')]}.")
    return getattr(module, func), {}, None


def _load_data(path):
    import numpy as np

    if path is None:
        return {}
    if not os.path.isfile(path):
        raise CLIError(f"Data file {path!r} does not exist.")
    ext = Path(path).suffix.lower()
    try:
        if ext == ".json":
            with open(path) as f:
                raw = json.load(f)
            return {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in raw.items()}
        if ext == ".npz":
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        if ext == ".csv":
            import csv
            with open(path) as f:
                rows = list(csv.DictReader(f))
            if not rows:
                raise CLIError(f"CSV file {path!r} has no rows.")
            return {k: np.asarray([float(r[k]) for r in rows]) for k in rows[0]}
    except CLIError:
        raise
    except Exception as e:
        raise CLIError(f"Reading data file {path!r} failed: {type(e).__name__}: {e}") from e
    raise CLIError(f"Data file {path!r}: unsupported extension {ext!r}; use .csv, .json or .npz.")


def _sampler_args(p):
    p.add_argument("--particles", type=int, default=2000, help="particles per chain (default 2000)")
    p.add_argument("--chains", type=int, default=4,
                   help="independent SMC runs; their spread gives the log Z error and R-hat (default 4)")
    p.add_argument("--move", default="hmc", choices=["rwm", "mala", "hmc", "nuts", "imh"],
                   help="MCMC move at each stage: random-walk Metropolis, MALA, HMC, NUTS or independent "
                        "Metropolis-Hastings with a particle-fitted t proposal (default hmc)")
    p.add_argument("--mcmc-steps", type=int, default=None,
                   help="MCMC steps per particle and stage (default 5; HMC on models of >= 10 parameters: "
                        "waste-free chains of 10 states unless this is given)")
    p.add_argument("--waste-free", action=argparse.BooleanOptionalAction, default=None,
                   help="waste-free moves (default: on for HMC on models of >= 10 parameters unless --mcmc-steps "
                        "or --max-mcmc-steps is given)")
    p.add_argument("--max-mcmc-steps", type=int, default=None,
                   help="adaptive MCMC steps per stage: from --mcmc-steps up to this many, while the particles "
                        "are still correlated with the stage's start (default: exactly --mcmc-steps)")
    p.add_argument("--target-ess", type=float, default=0.5,
                   help="adaptive tempering: each beta increment keeps this conditional ESS/N (default 0.5)")
    p.add_argument("--resampling", default="systematic",
                   choices=["systematic", "stratified", "multinomial", "residual", "entropic"],
                   help="resampling scheme; 'entropic' = corrected entropic resampling (default systematic)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random key, jax.random.key(SEED) (default 0)")


def _make_smc(args):
    from smcppl import SMC, Entropic, Resampling, TemperedSMC

    if args.resampling == "entropic":
        res = Resampling("systematic", "ess", 0.5, Entropic("epf_ess", correct=True))
    else:
        res = Resampling(args.resampling, "ess", 0.5)
    return lambda model: SMC(TemperedSMC(model, move=args.move, num_mcmc_steps=args.mcmc_steps,
                                         waste_free=args.waste_free, max_mcmc_steps=args.max_mcmc_steps,
                                         target_ess=args.target_ess,
                                         resampling=res),
                             num_particles=args.particles, num_chains=args.chains)


def _write_outputs(smc, out_nc, plots_dir, prefix="", reference_log_evidence=None):
    from smcppl.diagnostics import export, plots

    written = []
    if out_nc:
        Path(out_nc).parent.mkdir(parents=True, exist_ok=True)
        export.to_datatree(smc).to_netcdf(out_nc)
        written.append(out_nc)
    if plots_dir:
        written += plots.save_diagnostic_plots(smc, plots_dir, prefix=prefix,
                                               reference_log_evidence=reference_log_evidence)
    return written


def _default_out(spec):
    """``<model>_results.nc`` in the current folder: the zoo name, or the function of path/to/file.py:function."""
    return f"{spec.rsplit(':', 1)[-1]}_results.nc"


def _spread(values):
    """``mean +- sd`` across chains; sd with ``ddof=1`` (the sample sd) as everywhere in smcppl."""
    import numpy as np

    v = np.asarray(values, float)
    return f"{v.mean():.4f} +- {v.std(ddof=1):.4f} (sd across {v.size} chains)" if v.size > 1 else f"{v[0]:.4f}"


def cmd_run(args: argparse.Namespace) -> int:
    import jax

    model, data, entry = _load_model(args.model)
    data = {**data, **_load_data(args.data)}
    smc = _make_smc(args)(model)
    smc.run(jax.random.key(args.seed), **data)
    smc.print_summary()
    # an exact log Z is known for some zoo models with their own data: the reference line of the log Z plot
    exact = entry.exact() if entry is not None and entry.exact is not None and args.data is None else {}
    out = args.out or _default_out(args.model)
    for w in _write_outputs(smc, out, args.plots, reference_log_evidence=exact.get("log_evidence")):
        print(f"wrote {w}")
    if not args.plots:
        print("diagnostic plots: add --plots DIR")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from smcppl.models import zoo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make = _make_smc(args)
    print("== Bimodal posterior (exact mode weights 0.3 / 0.7) ==")
    ex = zoo.bimodal_exact()
    smc = make(zoo.bimodal)
    smc.run(jax.random.key(args.seed))
    x = np.asarray(smc.get_samples(group_by_chain=True)["x"])
    right = (x > 0).mean(axis=1)
    print(f"  mass of the right mode: {_spread(right)} (exact {ex['mode_weights'][1]:.4f})")
    print(f"  log Z: {_spread(smc.log_evidence)} (exact {ex['log_evidence']:.4f})")
    print(f"  compile {smc.timing['compile_seconds']:.1f} s, run {smc.timing['run_seconds']:.2f} s")
    for w in _write_outputs(smc, str(out / "bimodal.nc"), str(out / "plots"), prefix="bimodal_",
                            reference_log_evidence=ex["log_evidence"]):
        print(f"  wrote {w}")
    print("\n== Logistic regression: Challenger O-ring damage vs launch temperature (real data) ==")
    smc2 = make(zoo.logistic_regression)
    smc2.run(jax.random.key(args.seed + 1), **zoo.challenger_data())
    smc2.print_summary()
    for w in _write_outputs(smc2, str(out / "logistic_regression.nc"), str(out / "plots"), prefix="logistic_"):
        print(f"  wrote {w}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from smcppl.models.zoo import ZOO

    p = argparse.ArgumentParser(prog="smcppl", description="Sequential Monte Carlo for NumPyro models.",
                                epilog=f"zoo models for smcppl run: {', '.join(ZOO)}.\n"
                                       "smcppl COMMAND --help describes each command and its options.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    zoo = _zoo_help()
    r = sub.add_parser(
        "run", help="sample a zoo model or path/to/file.py:function with tempered SMC",
        description="Sample a model with adaptive tempered SMC, print the posterior summary and the SMC\n"
                    "diagnostics (log Z, stages, ESS, health checks), write the ArviZ export as netCDF\n"
                    "(--out) and, with --plots, diagnostic plots.",
        epilog=f"zoo models (data included):\n{zoo}\n\n"
               "examples:\n  smcppl run eight_schools\n"
               "  smcppl run my_model.py:model --data data.csv --out fit.nc --plots plots",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("model", metavar="MODEL",
                   help="a zoo model name (listed below) or path/to/file.py:function (a NumPyro model)")
    r.add_argument("--data", help="data file whose columns (.csv) or keys (.json, .npz) are the model's keyword "
                                  "arguments; overrides a zoo model's own data")
    r.add_argument("--out", help="netCDF file for the ArviZ export (posterior, sample_stats, smc_stats, ...; "
                                 "default ./MODEL_results.nc, MODEL the zoo name or the function name)")
    r.add_argument("--plots", metavar="DIR", help="folder for diagnostic PNG plots (default: no plots)")
    _sampler_args(r)
    r.set_defaults(func=cmd_run)
    d = sub.add_parser(
        "demo", help="quickstart: bimodal posterior + logistic regression on real data",
        description="Quickstart: a bimodal posterior checked against its exact mode masses and log Z, then\n"
                    "a logistic regression on the Challenger O-ring data; netCDF results and diagnostic\n"
                    "plots go to the --out folder.", formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--out", default="results", help="output folder (default ./results)")
    _sampler_args(d)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"smcppl: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from smcppl.core.engine import SMCError
        from smcppl.inference.tempered.numpyro_model import ModelError
        if isinstance(e, (ModelError, SMCError, ValueError, TypeError)):
            print(f"smcppl: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
