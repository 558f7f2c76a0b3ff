"""Does `make demo` give the same figures on another CPU? Checked on this one by emulating other kinds of x86-64 CPU.

    .comfy-host/venv/bin/python -m demo.cpu_check                   # training at a small size, under each kind
    .comfy-host/venv/bin/python -m demo.cpu_check --full --kinds 0,2 # at the demo's own size (a run takes minutes)
    .comfy-host/venv/bin/python -m demo.cpu_check --sample DIR      # the demo's sampling from the models in DIR
    .comfy-host/venv/bin/python -m demo.cpu_check --sample DIR --kinds 2 --against out/demo   # against make demo's

A kind of CPU is what its libraries see of it, capped in the environment (KINDS): which kernels torch runs
(ATEN_CPU_CAPABILITY), which code paths MKL and oneDNN take (MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA), which
variants of glibc's maths functions are chosen (GLIBC_TUNABLES), and how many threads torch starts
(OMP_NUM_THREADS). Cache sizes and the chip itself cannot be emulated.

Training: the sha256 of the four files under each kind, trained as `make demo` trains them (pinned,
demo.train.PINNED_ENV) and with the numerics left to the CPU (native), which shows what the pins take away.
The exit status is 1 if the pinned files differ between kinds.

Sampling (--sample DIR, a models folder `make demo` filled): the demo's whole sampling through ComfyUI, its server
under each kind (not pinned: ComfyUI samples at the CPU's own speed), and its tables compared without their
seconds, and the demo's claims checked on each kind's samples. --against OUT compares each kind's tables with those
of a `make demo` run on this CPU (its --out folder) too, so one kind need not sample twice. The exit status is 1 if
the tables differ.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import tempfile
from pathlib import Path

from demo import train
from harness import host

_NO_AVX512 = "-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL"
KINDS: dict[str, dict[str, str]] = {
    "this CPU": {},
    "AVX2, no AVX-512": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                         "ONEDNN_MAX_CPU_ISA": "AVX2", "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={_NO_AVX512}"},
    "SSE4.2, no AVX (x86-64-v2)": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                                   "ONEDNN_MAX_CPU_ISA": "SSE41",
                                   "GLIBC_TUNABLES": f"glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-F16C,{_NO_AVX512}"},
    "4 threads": {"OMP_NUM_THREADS": "4"},
}
# Small enough for a few minutes per kind here, long enough that any difference in the arithmetic shows in the bytes.
SMALL = train.TrainConfig(base_steps=100, rl_samples=512, rl_sample_steps=12, rl_steps=60)


def files_digest(folder: Path) -> str:
    """One sha256 over the four files the training process writes."""
    return hashlib.sha256(b"".join((folder / f"{name}.safetensors").read_bytes() for name in train.FILES)).hexdigest()


def train_digests(config: train.TrainConfig, kinds: list[str], native: bool) -> dict[str, str]:
    """{kind: digest of the files trained under it}, pinned as `make demo` trains, or native."""
    out = {}
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            train.train_in_process(config, Path(tmp), quiet=True, native=native, env=KINDS[kind])
            out[kind] = files_digest(Path(tmp))
    return out


def _tables(folder: Path) -> dict[str, list[dict]]:
    """The demo's tables without the columns that time it."""
    tables = {}
    for name in ("sweep.csv", "grid.csv", "cost.csv"):
        with open(folder / name, newline="") as f:
            tables[name] = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
    return tables


def table_differences(tables: dict[str, list[dict]], reference: dict[str, list[dict]]) -> list[str]:
    """The rows of each table that differ from the reference's, in words."""
    out = []
    for name, rows in tables.items():
        theirs = reference.get(name, [])
        if len(rows) != len(theirs):
            out.append(f"{name}: {len(rows)} rows against {len(theirs)}")
        out += [f"{name}: {a} against {b}" for a, b in zip(rows, theirs, strict=False) if a != b]
    return out


def sample_tables(models: Path, kinds: list[str], out: Path) -> dict[str, dict]:
    """{kind: the demo's tables} from one set of models, each kind's server sampling them."""
    from demo import run_demo

    result = {}
    for kind in kinds:
        folder = out / kind.split(",")[0].replace(" ", "_")
        rows, _, cost, _ = run_demo.run(models, folder, out / "work", train.TrainConfig(), quiet=True,
                                        server_env=KINDS[kind])
        result[kind] = _tables(folder)
        print(f"  {kind}:", flush=True)
        for claim, holds in run_demo.claims(rows, cost):
            print(f"    {'holds' if holds else 'FAILS'}: {claim}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="train at the demo's own size, not the small one")
    parser.add_argument("--kinds", help="which kinds, by their place in KINDS (for example 0,2); default all")
    parser.add_argument("--pinned-only", action="store_true", help="leave out the native runs")
    parser.add_argument("--sample", type=Path, metavar="DIR", help="compare the demo's sampling from DIR instead")
    parser.add_argument("--against", type=Path, metavar="OUT",
                        help="with --sample: also compare with the tables of a make demo run (its --out folder)")
    args = parser.parse_args()
    host.use_comfy(cpu=True)
    kinds = [list(KINDS)[int(i)] for i in args.kinds.split(",")] if args.kinds else list(KINDS)
    for kind in kinds:
        print(f"{kind:28s} {' '.join(f'{k}={v}' for k, v in KINDS[kind].items()) or '(nothing capped)'}")
    if args.sample:
        with tempfile.TemporaryDirectory() as tmp:
            tables = sample_tables(args.sample.resolve(), kinds, Path(tmp))
        if args.against:
            tables[f"make demo ({args.against})"] = _tables(args.against)
        reference = next(iter(tables.values()))
        differences = {kind: table_differences(t, reference) for kind, t in tables.items()}
        for kind, lines in differences.items():
            for line in lines:
                print(f"  {kind} differs: {line}")
        same = not any(differences.values())
        print(f"the demo's tables (sweep, grid, cost; seconds left out): {'the same' if same else 'DIFFER'} "
              f"under {len(tables)} runs")
        raise SystemExit(0 if same else 1)
    config = train.TrainConfig() if args.full else SMALL
    print(f"training {config}")
    pinned = train_digests(config, kinds, native=False)
    native = {} if args.pinned_only else train_digests(config, kinds, native=True)
    print(f"{'kind':28s} {'pinned (make demo)':20s} native")
    for kind in kinds:
        print(f"{kind:28s} {pinned[kind][:16]:20s} {native.get(kind, '-')[:16]}")
    same = len(set(pinned.values())) == 1
    print(f"pinned: {'the same files' if same else 'DIFFERENT files'} under {len(kinds)} kinds"
          + (f"; native: {len(set(native.values()))} different sets of files" if native else ""))
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
