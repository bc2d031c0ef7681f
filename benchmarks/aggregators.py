"""Benchmark: every registered aggregation rule (and pre step) against the anchors that have
it, ByzFL 0.0.11 and Flower 1.42, on the same inputs, in one process.

    PYTHONPATH=src python benchmarks/aggregators.py [--n 10 100] [--d 1e6] [--repeat 3]
        [--threads 2] [--rules median trimmed_mean ...] [--no-anchors] [--budget 30]

Inputs: n float32 Gaussian updates of dimension d, f = (n - 3) // 4 (so Bulyan's n >= 4f + 3
holds). Times are the best of --repeat runs, in seconds, with --threads threads for torch,
numpy's BLAS (set before numpy loads) and our chunked numpy work; an anchor whose single run
exceeds --budget seconds is run once. "ratio" is ours / the fastest anchor (< 1: we are
faster; 0.5 is twice as fast).

Anchors, and what is timed (everything a user of that library calls per round, inputs built
outside the timer):
  - ByzFL 0.0.11 (``byzfl.aggregators``), called on the stacked torch tensor and on the numpy
    array; the faster of the two counts. Krum and MultiKrum get f + 1: ByzFL scores with
    n - f - 1 neighbours, the paper (and we) with n - f - 2, so ByzFL's f + 1 is the paper's f.
    CenteredClipping(L=1, tau) with our round's median distance as tau; GeometricMedian with its
    defaults (nu = 0.1, T = 3 iterations from 0; ours iterates to convergence from the mean);
    norm_bounding against ByzFL's Clipping pre-aggregator (c = our median norm) + Average.
  - Flower 1.42 Message-API math (``flwr.serverapp.strategy``): one ArrayRecord per client;
    the timed path is what ``aggregate_train`` does after reply validation (reading the arrays
    out of the records, selecting, stacking, averaging). Its Bulyan selects theta rows at once
    with Multi-Krum (not repeated Krum, as the paper and Flower's legacy
    ``flwr.server.strategy.aggregate.aggregate_bulyan`` do).

ByzFL is a benchmark/test-only dependency, never a dependency of the package. Its top-level
``import byzfl`` needs torchvision (not installed here), so ``load_byzfl`` loads only its
aggregator modules. Install it with

    pip install --no-deps byzfl==0.0.11

Ours get the stacked Tensor[n, d] (stacking is the strategy adapter's job, not the rule's).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

#: the ByzFL release the anchors (and tests/test_reference_aggregators.py) are pinned to
BYZFL_VERSION = "0.0.11"


def load_byzfl():
    """ByzFL 0.0.11's aggregator modules, ``(aggregators, preaggregators)``, without running
    the package's ``__init__`` (which imports byzfl.benchmark and byzfl.fed_framework and
    through them torchvision, which this project does not install).

    ``byzfl`` is registered as a bare namespace package over the installed directory; its
    ``aggregators`` and ``utils`` subpackages need only numpy, scipy and torch. Raises
    ImportError with the reason (not installed, or another version)."""
    import importlib
    import importlib.metadata
    import importlib.util
    import types

    try:
        version = importlib.metadata.version("byzfl")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"byzfl is not installed: pip install --no-deps byzfl=={BYZFL_VERSION}"
        ) from None
    if version != BYZFL_VERSION:
        raise ImportError(f"byzfl {version} is installed; the anchors are pinned to "
                          f"{BYZFL_VERSION}: pip install --no-deps byzfl=={BYZFL_VERSION}")
    if "byzfl" not in sys.modules:
        spec = importlib.util.find_spec("byzfl")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("byzfl is installed but its package directory was not found")
        pkg = types.ModuleType("byzfl")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = spec.origin
        sys.modules["byzfl"] = pkg
    aggs = importlib.import_module("byzfl.aggregators.aggregators")
    pre = importlib.import_module("byzfl.aggregators.preaggregators")
    return aggs, pre


# ---------------------------------------------------------------- anchors
def flower_anchors(X, f: int, n: int) -> dict:
    """rule -> (setup() -> records, fn(records)) running Flower 1.42's Message-API math."""
    import numpy as np
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
    from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
    from flwr.serverapp.strategy.multikrum import select_multikrum
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    Xn = X.numpy()

    def setup():
        return [RecordDict({"arrays": ArrayRecord([x]),
                            "metrics": MetricRecord({"num-examples": 1})}) for x in Xn]

    def layers(contents):
        return np.stack([c["arrays"]["0"].numpy() for c in contents])

    def bulyan(contents):  # the body of flwr Bulyan.aggregate_train
        theta = len(contents) - 2 * f
        beta = theta - 2 * f
        sel = select_multikrum(contents, f, theta)
        arrs = [c["arrays"].to_numpy_ndarrays(keep_input=False) for c in sel]
        med = [np.median(a, axis=0) for a in zip(*arrs, strict=True)]
        return aggregate_n_closest_weights(med, arrs, beta)

    return {
        "fedavg": (setup, lambda c: aggregate_arrayrecords(c, "num-examples")),
        "median": (setup, lambda c: np.median(layers(c), axis=0)),
        "trimmed_mean": (setup, lambda c: trim_mean(layers(c), f / n)),
        "krum": (setup, lambda c: aggregate_arrayrecords(select_multikrum(c, f, 1),
                                                         "num-examples")),
        "multi_krum": (setup, lambda c: aggregate_arrayrecords(select_multikrum(c, f, n - f),
                                                               "num-examples")),
        "bulyan": (setup, bulyan),
    }


def byzfl_anchors(X, f: int, n: int, tau: float, max_norm: float) -> dict:
    """rule -> list of (setup() -> input, fn(input)) for ByzFL 0.0.11, torch and numpy inputs."""
    aggs, pre = load_byzfl()
    Xn = X.numpy()
    kinds = [lambda: X, lambda: Xn]  # ByzFL takes both; it computes in the input's library
    copies = [lambda: X.clone(), lambda: Xn.copy()]  # Clipping writes into its input
    out = {
        "fedavg": [(k, aggs.Average()) for k in kinds],
        "median": [(k, aggs.Median()) for k in kinds],
        "trimmed_mean": [(k, aggs.TrMean(f=f)) for k in kinds],
        "geometric_median": [(k, aggs.GeometricMedian()) for k in kinds],
        "krum": [(k, aggs.Krum(f=f + 1)) for k in kinds],
        "multi_krum": [(k, aggs.MultiKrum(f=f + 1)) for k in kinds],
        "centered_clipping": [(k, lambda v: aggs.CenteredClipping(L=1, tau=float(tau))(v))
                              for k in kinds],
        "norm_bounding": [(k, lambda v: aggs.Average()(pre.Clipping(c=float(max_norm))(v)))
                          for k in copies],
        "pre:nnm": [(k, pre.NNM(f=f)) for k in kinds],
        "pre:bucketing": [(k, pre.Bucketing(s=2)) for k in kinds],
    }
    if n * X.shape[1] > 1 << 24:  # torch.quantile (ByzFL's torch median) refuses > 2^24 values
        out["median"] = out["median"][1:]
    if n * (n - f) * X.shape[1] * 4 > 4 << 30:  # ByzFL's NNM gathers an n x (n - f) x d array
        print(f"  (ByzFL NNM skipped at n={n}: it would allocate "
              f"{n * (n - f) * X.shape[1] * 4 / 2**30:.0f} GiB)")
        del out["pre:nnm"]
    return out


def cell(t: float | None) -> str:
    return f"{t:>10.3f}" if t is not None else f"{'-':>10}"


def best_of(fn, repeat: int, budget: float, setup=None) -> float | None:
    """Best wall time of up to ``repeat`` runs of fn(setup()) (setup outside the timer); a run
    longer than ``budget`` seconds ends the repeats. None if an anchor fails (e.g. ByzFL's NNM
    allocates n x n x d values and runs out of memory at n = 100, d = 1e6)."""
    best = float("inf")
    for _ in range(repeat):
        arg = setup() if setup else None
        gc.collect()
        t = time.perf_counter()
        try:
            fn(arg) if setup else fn()
        except (MemoryError, RuntimeError) as e:
            print(f"  (anchor failed: {str(e).splitlines()[0][:80]})")
            return None
        dt = time.perf_counter() - t
        best = min(best, dt)
        del arg
        if dt > budget:
            break
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--d", type=float, nargs="+", default=[1e6])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rules", nargs="*", help="only these (pre steps as pre:NAME)")
    ap.add_argument("--no-anchors", action="store_true")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="an anchor run longer than this many seconds is not repeated")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy / torch load their BLAS

    import numpy as np
    import torch

    from fedmedsec.aggregators import AGGREGATORS, PRE_AGGREGATORS, AggregationContext
    from fedmedsec.aggregators._common import dists_to, row_norms

    torch.set_num_threads(args.threads)
    byz_ok = not args.no_anchors
    if byz_ok:
        try:
            load_byzfl()
        except ImportError as e:
            print(f"ByzFL anchors skipped: {e}")
            byz_ok = False
    import flwr

    print(f"torch {torch.__version__}, numpy {np.__version__}, flwr {flwr.__version__}, "
          f"byzfl {BYZFL_VERSION if byz_ok else '-'}; {args.threads} threads, best of "
          f"{args.repeat}")
    header = (f"{'rule':<20}{'n':>5}{'d':>9}{'ours s':>10}{'byzfl s':>10}{'flower s':>10}"
              f"{'ratio':>8}")
    print(header)
    print("-" * len(header))
    names = [e.name for e in AGGREGATORS] + [f"pre:{e.name}" for e in PRE_AGGREGATORS]
    if args.rules:
        names = [x for x in names if x in args.rules]
    for d in (int(x) for x in args.d):
        for n in args.n:
            f = (n - 3) // 4
            X = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
            ref = X.mean(0)
            tau = float(dists_to(X, torch.zeros(d)).median())
            max_norm = float(row_norms(X).median())
            fl = flower_anchors(X, f, n) if not args.no_anchors else {}
            bz = byzfl_anchors(X, f, n, tau, max_norm) if byz_ok else {}
            for name in names:
                if name.startswith("pre:"):
                    entry = PRE_AGGREGATORS.get(name[4:])
                else:
                    entry = AGGREGATORS.get(name)
                obj = entry.obj(entry.params())

                def ours(obj=obj, X=X, f=f, n=n, ref=ref):
                    ctx = AggregationContext(
                        f=f, reference=ref, generator=torch.Generator().manual_seed(0),
                        client_ids=tuple(range(n)), state={},
                    )
                    return obj(X, ctx)

                t_ours = best_of(ours, args.repeat, float("inf"))
                t_bz = [best_of(fn, args.repeat, args.budget, setup)
                        for setup, fn in bz.get(name, [])]
                t_bz = min((t for t in t_bz if t is not None), default=None)
                t_fl = None
                if name in fl:
                    setup, fn = fl[name]
                    t_fl = best_of(fn, args.repeat, args.budget, setup)
                anchors = [t for t in (t_bz, t_fl) if t is not None]
                ratio = f"{t_ours / min(anchors):.2f}" if anchors else "-"
                print(f"{name:<20}{n:>5}{d:>9}{t_ours:>10.3f}{cell(t_bz)}{cell(t_fl)}{ratio:>8}",
                      flush=True)
            del X, fl, bz
            gc.collect()


if __name__ == "__main__":
    main()
