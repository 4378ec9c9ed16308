"""sparq-perf command line: each command parses options, calls one library function, prints.

Bad input ends in one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import UserError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UserError(message)


def _add_output_flags(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON instead of tables")
    g.add_argument("--csv", action="store_true", help="print rows as CSV instead of tables")


COMPARE_DEFAULT = ("sparq", "sparq-1xk", "quest", "double-sparsity", "loki", "h2o", "streaming-llm")


def _add_workload_flags(p, *, seq_help: str, method_default: str, seq_default: str = "4k"):
    p.add_argument("--gpu", "--device", dest="device", default="h100-sxm",
                   help="hardware profile name or alias, or a profile YAML path (default h100-sxm; see `sparq-perf profiles`)")
    p.add_argument("--model", default="llama2-7b", help="model name or YAML path (default llama2-7b; see `sparq-perf models`)")
    p.add_argument("--batch", type=int, default=1, help="sequences decoded together (default 1)")
    p.add_argument("--seq", default=seq_default, help=seq_help)
    p.add_argument("--compression", default="1/8",
                   help="target transfer ratio c: r = d_h*c, k = S*c/2 for SparQ; each method its own rule (default 1/8)")
    p.add_argument("--method", default=method_default,
                   help=f"methods, comma-separated (default {method_default}); dense is always the baseline. Known: "
                        "dense, sparq, sparq-1xk, quest, double-sparsity, loki, h2o, streaming-llm (lm-infinite), flexgen")
    p.add_argument("--page-size", type=int, default=16, help="Quest page size P (default 16)")
    p.add_argument("--label-bits", type=int, default=16, choices=[16, 4], help="Double Sparsity label cache bits (default 16)")
    dtypes = ["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
    p.add_argument("--weight-dtype", default="bf16", choices=dtypes, help="weight dtype (default bf16)")
    p.add_argument("--kv-dtype", default="bf16", choices=dtypes, help="KV cache dtype (default bf16)")
    p.add_argument("--calibration", help="calibration YAML written by `sparq-perf measure`")
    p.add_argument("--copy-bandwidth", type=float, metavar="GB/S",
                   help="measured copy bandwidth of the target device in GB/s (scales a calibration to it)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparq-perf", description="How much faster SparQ Attention makes decode, predicted and measured.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("predict", help="analytic bytes, FLOPs and time of dense vs SparQ (and rivals) decode (no GPU needed)",
                       description="Predict each decode operation, dense vs SparQ or other methods. Defaults: llama2-7b, "
                                   "batch 1, S=4k, compression 1/8 (r = d_h/8, k = S/16), l = 0, bf16 weights and KV.")
    _add_workload_flags(p, seq_help="KV length S; k = x1024, M = x1024^2 (default 4k = 4096)",
                        method_default="dense,sparq")
    p.add_argument("--r", type=int, help="query components (overrides --compression)")
    p.add_argument("--k", help="positions fetched: a count or a fraction of S such as S/16 (overrides --compression)")
    p.add_argument("--l", type=int, default=0, help="local window, counted inside k (default 0)")
    p.add_argument("--require-fit", action="store_true",
                   help="exit 2 if weights + KV do not fit in the device memory (default: predict anyway, with a warning)")
    _add_output_flags(p)

    p = sub.add_parser("compare", help="methods side by side at one target compression (no GPU needed)",
                       description="Each method at the settings that reach --compression: attention bytes and time, "
                                   "whole-step speedup over dense, KV memory and the largest batch that fits.")
    _add_workload_flags(p, seq_help="KV length S, or several separated by commas (default 32k)",
                        method_default=",".join(COMPARE_DEFAULT), seq_default="32k")
    _add_output_flags(p)

    p = sub.add_parser("measure", help="time the Triton kernels on the local GPU beside their predictions; calibrate",
                       description="Needs a CUDA GPU, torch and triton. Writes rows.csv, metadata.json and "
                                   "calibration.yaml under --out.")
    p.add_argument("--sweep", help="sweep YAML (default: the built-in default sweep)")
    p.add_argument("--out", default="reports/measured", help="output folder (default reports/measured)")
    p.add_argument("--resume", action="store_true", help="keep finished rows in --out and run only the rest")
    p.add_argument("--quick", action="store_true", help="a few points only, for a smoke test")
    p.add_argument("--commit", default=None, help="git commit to record (default: asked of git)")
    p.add_argument("--refit", action="store_true",
                   help="no GPU: fit calibration.yaml again from the rows.csv and metadata.json in --out")

    p = sub.add_parser("report", help="write the interactive, self-contained HTML report")
    p.add_argument("--measurements", action="append", default=[],
                   help="folder written by `measure` (repeatable; default: every reports/*/rows.csv)")
    p.add_argument("--benchmark", action="append", default=[], dest="benchmarks",
                   help="kernels.json written by experiments/bench_kernels.py (repeatable; default: "
                        "reports/kernels/kernels.json and reports/kernels/*/kernels.json)")
    p.add_argument("--out", default="reports/index.html", help="HTML file to write (default reports/index.html)")

    p = sub.add_parser("profiles", help="list hardware profiles with their key figures")
    _add_output_flags(p)
    p = sub.add_parser("models", help="list model architectures")
    _add_output_flags(p)
    return parser


def _impls(args) -> dict:
    from .cost.rivals import DoubleSparsityImpl, QuestImpl

    if args.page_size < 1:
        raise UserError(f"--page-size must be at least 1, got {args.page_size}")
    return {"quest": QuestImpl(page_size=args.page_size), "double-sparsity": DoubleSparsityImpl(label_bits=args.label_bits)}


def _settings(args, seq=None):
    from .calibration import load_calibration
    from .hardware import get_profile
    from .models import get_model
    from .predict import Settings, parse_methods
    from .units import parse_count, parse_fraction

    seq = parse_count(args.seq, "--seq") if seq is None else seq
    if args.copy_bandwidth is not None and not args.copy_bandwidth > 0:
        raise UserError(f"--copy-bandwidth must be positive GB/s, got {args.copy_bandwidth}")
    return Settings(
        model=get_model(args.model), hw=get_profile(args.device), batch=args.batch, seq_len=seq,
        compression=parse_fraction(args.compression, "--compression"), r=getattr(args, "r", None),
        k=getattr(args, "k", None), l=getattr(args, "l", 0),
        weight_dtype=args.weight_dtype, kv_dtype=args.kv_dtype, methods=parse_methods(args.method),
        calibration=load_calibration(args.calibration) if args.calibration else None,
        copy_bandwidth_bytes_per_s=args.copy_bandwidth * 1e9 if args.copy_bandwidth else None,
        impls=_impls(args),
    )


def cmd_predict(args) -> int:
    from . import rows as R
    from .predict import predict
    from .text import fit_message, print_prediction

    pred = predict(_settings(args))
    if args.require_fit and not all(pred.summary[f"{m}.fits"] for m in pred.methods):
        raise UserError(fit_message(pred))
    if args.json:
        from .compare import comparison_from

        comparison = comparison_from(pred.evaluation, pred.settings.compression,
                                     {m: p["reachable"] for m, p in pred.params.items()}, pred.settings.impls)
        print(json.dumps({**pred.to_dict(), "rows": json.loads(R.to_json(pred.rows)), "comparison": comparison},
                         indent=1))
    elif args.csv:
        sys.stdout.write(R.to_csv(pred.rows))
    else:
        print_prediction(pred)
        if not all(pred.summary[f"{m}.fits"] for m in pred.methods):
            print(f"warning: {fit_message(pred)}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from .compare import compare_rows
    from .text import print_comparison
    from .units import parse_count

    seqs = [parse_count(t, "--seq") for t in str(args.seq).split(",") if t.strip()]
    if not seqs or min(seqs) < 1:
        raise UserError(f"--seq: give one or more positive lengths, got {args.seq!r}")
    s = _settings(args, seq=seqs[0])
    if s.batch < 1:
        raise UserError(f"batch must be at least 1 (got {s.batch})")
    rows = compare_rows(s.model, s.hw, seq_len=seqs, batch=s.batch, compression=s.compression, methods=s.methods,
                        weight_dtype=s.weight_dtype, kv_dtype=s.kv_dtype, calibration=s.calibration,
                        copy_bandwidth_bytes_per_s=s.copy_bandwidth_bytes_per_s, impls=s.impls)
    if args.json or args.csv:
        _print_records(rows, args.json)
    else:
        print_comparison(rows)
    return 0


def cmd_profiles(args) -> int:
    from .hardware import builtin_profiles
    from .text import print_profiles

    profiles = list(builtin_profiles().values())
    if args.json or args.csv:
        recs = [{"name": h.name, "kind": h.kind, "description": h.description, "aliases": " ".join(h.aliases),
                 "capacity_bytes": h.capacity_bytes, "bandwidth_bytes_per_s": h.bandwidth_bytes_per_s,
                 "peak_bandwidth_bytes_per_s": max(t.peak_bandwidth_bytes_per_s for t in h.memory_tiers),
                 "bf16_flops_per_s": h.flops_per_s("bf16"), "compute_units": h.compute_units} for h in profiles]
        _print_records(recs, args.json)
    else:
        print_profiles(profiles)
    return 0


def cmd_models(args) -> int:
    from dataclasses import asdict

    from .models import builtin_models
    from .text import print_models

    models = list(builtin_models().values())
    if args.json or args.csv:
        _print_records([{**asdict(m), "n_params": m.n_params} for m in models], args.json)
    else:
        print_models(models)
    return 0


def _print_records(recs, as_json: bool) -> None:
    if as_json:
        print(json.dumps(recs, indent=1))
        return
    import csv

    w = csv.DictWriter(sys.stdout, fieldnames=list(recs[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(recs)


def cmd_measure(args) -> int:
    from .measure.run import main as measure_main

    return measure_main(args)


def cmd_report(args) -> int:
    from .report.build import main as report_main

    return report_main(args)


COMMANDS = {"predict": cmd_predict, "compare": cmd_compare, "measure": cmd_measure, "report": cmd_report, "profiles": cmd_profiles,
            "models": cmd_models}


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if not args.command:
            build_parser().print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"sparq-perf: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
