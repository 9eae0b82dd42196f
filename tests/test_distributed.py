"""rnnkit.distributed: data-parallel fit, DistributedOptimizer (both styles) and distributed
predict, run for real on 2 MPI ranks (``mpiexec -n 2 python -m mpi4py tests/mpi_worker.py``)
and compared with one process using the global batch; plus the pieces that need no MPI
(sharding, metric states, the missing-mpi4py error).

The MPI tests skip, with the reason, when mpi4py or mpiexec is missing or the launcher cannot
start 2 ranks here (``pip install "rnnkit[mpi]"`` installs mpi4py and the mpich wheel, whose
``mpiexec`` lands next to the interpreter).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest

import mpi_worker as W
from rnnkit import distributed as dist
from rnnkit import metrics

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMEOUT = 240


def _mpiexec() -> str:
    """The mpiexec next to this interpreter (the mpich wheel's), else the one on PATH."""
    local = Path(sys.executable).with_name("mpiexec")
    if local.exists():
        return str(local)
    found = shutil.which("mpiexec")
    if found is None:
        pytest.skip('MPI tests: no mpiexec found (pip install "rnnkit[mpi]" brings mpich\'s)')
    return found


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # 2 ranks x 1 thread on a 2-core machine
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _launch(args: List[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", *args],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mpi_ok() -> None:
    """Skips (with the reason) unless mpi4py imports and mpiexec starts 2 ranks here."""
    try:
        import mpi4py  # noqa: F401  (imported only to see that it is installed)
    except ImportError:
        pytest.skip('MPI tests: mpi4py is not installed (pip install "rnnkit[mpi]")')
    try:
        # every rank exits 0 only if it sees 2 ranks (no parsing of interleaved output)
        r = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c",
                            "import sys; from mpi4py import MPI; sys.exit(MPI.COMM_WORLD.Get_size() != 2)"],
                           env=_env(), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"MPI tests: mpiexec could not start 2 ranks here: {e!r}")
    if r.returncode != 0:
        pytest.skip(f"MPI tests: mpiexec -n 2 failed here (exit {r.returncode}): "
                    f"{(r.stderr or r.stdout).strip()[-500:] or 'no output'}")


@pytest.fixture(scope="module")
def worker(mpi_ok: None) -> Iterator[Path]:
    """One 2-rank run of tests/mpi_worker.py (every case); its output directory (a private
    temporary directory: pytest sessions running at the same time prune each other's
    ``tmp_path`` trees)."""
    with tempfile.TemporaryDirectory(prefix="rnnkit-mpi-") as d:
        out = Path(d)
        r = _launch([str(HERE / "mpi_worker.py"), str(out)])
        assert r.returncode == 0, (f"mpi_worker failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n"
                                   f"{r.stderr[-4000:]}")
        yield out


def _max_diff(a: List[np.ndarray], b: List[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _weights(npz: "np.lib.npyio.NpzFile") -> List[np.ndarray]:
    return [npz[f"w{i}"] for i in range(sum(k.startswith("w") for k in npz.files))]


# ---- under mpiexec -----------------------------------------------------------------------------

@pytest.mark.mpi
@pytest.mark.parametrize("opt,n", W.KERAS_CASES)
def test_fit_on_2_ranks_equals_one_process_with_the_global_batch(worker, opt, n):
    """2 ranks x batch 4 (uneven and empty last shares included) == 1 process x batch 8:
    weights, loss, metrics and validation, at float64 1e-10; both ranks end identical although
    rank 1 started from other weights and optimizer state."""
    ref_model, ref_hist = W.keras_fit(opt, n, 2 * W.B, distributed=False)
    r0 = np.load(worker / f"keras_{opt}_rank0.npz")
    r1 = np.load(worker / f"keras_{opt}_rank1.npz")
    ref = ref_model.get_weights()
    assert _max_diff(ref, _weights(r0)) < 1e-10
    assert _max_diff(_weights(r0), _weights(r1)) == 0.0
    assert _max_diff(ref, [w - 1 for w in ref]) == 1.0  # sanity of the comparison itself
    for key, values in ref_hist.items():
        np.testing.assert_allclose(r0[f"h_{key}"], values, rtol=1e-10, atol=1e-12, err_msg=key)
        np.testing.assert_array_equal(r1[f"h_{key}"], r0[f"h_{key}"], err_msg=key)
    assert {"loss", "val_loss", "accuracy", "auc", "f1_score", "val_f1_score"} <= set(ref_hist)
    # the CSVLogger ran on rank 0 only: one header and one row per epoch
    rows = (worker / f"keras_{opt}.csv").read_text().splitlines()
    assert len(rows) == 1 + W.EPOCHS and rows[0].startswith("epoch,")
    if opt == "adam":  # a JSONLogger with batch hooks, on rank 0 only: a line per batch and epoch
        lines = (worker / "keras_adam.jsonl").read_text().splitlines()
        assert len(lines) == W.EPOCHS * (-(-n // (2 * W.B)) + 1)


@pytest.mark.mpi
def test_fit_float32_with_steps_per_epoch_and_validation_split(worker):
    """float32, epochs of 3 global batches running on through the reshuffled data, a held-out
    split sharded too: as one process, to float32 rounding."""
    ref_model, ref_hist = W.float32_fit(2 * W.B, distributed=False)
    r0 = np.load(worker / "float32_rank0.npz")
    assert _max_diff(ref_model.get_weights(), _weights(r0)) < 1e-5
    assert _max_diff(_weights(r0), _weights(np.load(worker / "float32_rank1.npz"))) == 0.0
    for key, values in ref_hist.items():
        np.testing.assert_allclose(r0[f"h_{key}"], values, rtol=1e-5, err_msg=key)


@pytest.mark.mpi
def test_distributed_optimizer_pytorch_style_equals_one_process(worker):
    """nn.LSTM + nn.Linear + optim.Adam, 2 ranks x batch 4 through DistributedOptimizer
    (weighted by the shares, uneven last batches) == one process x batch 8."""
    ref = W.torch_train(0, 1, 2 * W.B)
    r0 = _weights(np.load(worker / "torch_rank0.npz"))
    r1 = _weights(np.load(worker / "torch_rank1.npz"))
    assert _max_diff(ref, r0) < 1e-10
    assert _max_diff(r0, r1) == 0.0


@pytest.mark.mpi
def test_distributed_predict_gathers_in_order(worker):
    res = np.load(worker / "predict_rank0.npz")
    model = W.predict_model()
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in model.get_weights()]), res["weights"])
    expected = model.predict(W.predict_data(), batch_size=8, verbose=0)
    assert res["y"].shape == expected.shape == (53, W.T, 2)
    np.testing.assert_array_equal(res["y"], expected)


@pytest.mark.mpi
def test_gradients_travel_in_one_bucket_per_step(worker):
    """The small models fit in one bucket: one Allreduce per step, never one per parameter."""
    for r in (0, 1):
        s = np.load(worker / f"stats_rank{r}.npz")
        assert int(s["steps"]) > 0
        assert int(s["allreduce_calls"]) == int(s["steps"])
        assert int(s["allreduce_bytes"]) > 0


@pytest.mark.mpi
def test_small_buckets_mixed_dtypes_and_weights(worker):
    """1 KB buckets (several per dtype, arrays larger than a bucket alone), float32 and float64
    together, weights 1 and 2: sum_k w_k g_k / sum_k w_k, and the scalars summed."""
    grads = [W.bucket_arrays(r) for r in (0, 1)]
    for r in (0, 1):
        res = np.load(worker / f"buckets_rank{r}.npz")
        assert int(res["count"]) >= 4
        np.testing.assert_array_equal(res["sums"], [3.0, 10.0, 2.0])
        for i, (g0, g1) in enumerate(zip(*grads)):
            got = res[f"g{i}"]
            assert got.dtype == g0.dtype and got.shape == g0.shape
            want = (g0.astype(np.float64) + 2 * g1.astype(np.float64)) / 3
            np.testing.assert_allclose(got, want, rtol=1e-6 if g0.dtype == np.float32 else 1e-15)


@pytest.mark.mpi
def test_mistakes_raise_the_same_error_on_every_rank(worker):
    got = [json.loads((worker / f"errors_rank{r}.json").read_text()) for r in (0, 1)]
    for g in got:
        assert g["wrap"].startswith("TypeError: optimizer:")
        assert "PyTorch-style" in g["style"]
        assert g["mismatch"].startswith("ValueError: model:") and "different shapes" in g["mismatch"]
        assert "same number of steps" in g["unequal_steps"] and "between 1 and 2" in g["unequal_steps"]
        assert "steps_per_epoch" in g["generator_without_steps"]


@pytest.mark.mpi
def test_distributed_scoring_example(mpi_ok):
    r = _launch([str(ROOT / "examples" / "distributed_scoring.py"), "--samples", "3001",
                 "--timesteps", "20", "--check"])
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert "scored 3001 series on 2 ranks" in r.stdout
    assert "check: max |distributed - local| = " in r.stdout and "(ok)" in r.stdout
    assert r.stdout.count("scored") == 1  # only rank 0 prints


# ---- without MPI -------------------------------------------------------------------------------

def test_shard_range_splits_evenly_and_covers_everything():
    for n in (0, 1, 5, 8, 37):
        for p in (1, 2, 3, 8):
            bounds = [dist.shard_range(n, r, p) for r in range(p)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="n: expected an int >= 0"):
        dist.shard_range(-1, 0, 2)
    with pytest.raises(ValueError, match="rank_"):
        dist.shard_range(4, 2, 2)


def test_sharded_array_data_is_the_global_batches_split():
    """Every rank draws the same permutation; the ranks' slices of each step put together are
    exactly the one-process batch of size p * b, in order."""
    from rnnkit._data import ArrayData

    x = np.arange(37, dtype=np.float32).reshape(37, 1)
    for p, shuffle in ((2, True), (3, True), (2, False)):
        one = ArrayData([x], [None], None, 4 * p, shuffle)
        shards = [dist.ShardedArrayData(ArrayData([x], [None], None, 4, shuffle), r, p) for r in range(p)]
        assert all(s.steps == one.steps for s in shards)
        ref = [b[0][0][:, 0] for b in one.epoch(np.random.default_rng(3))]
        parts = [[b[0][0][:, 0] for b in s.epoch(np.random.default_rng(3))] for s in shards]
        for step, batch in enumerate(ref):
            np.testing.assert_array_equal(np.concatenate([parts[r][step] for r in range(p)]), batch)


@pytest.mark.parametrize("make", [
    lambda: metrics.CategoricalAccuracy(), lambda: metrics.RootMeanSquaredError(),
    lambda: metrics.Precision(thresholds=[0.3, 0.6]), lambda: metrics.Recall(),
    lambda: metrics.AUC(), lambda: metrics.AUC(multi_label=True, curve="PR"),
    lambda: metrics.F1Score(average="macro"), lambda: metrics.FBetaScore(average=None, beta=2.0),
    lambda: metrics.F1Score(average="micro")])
def test_metric_states_add_up_across_shards(rng, make):
    """What fit(distributed=True) relies on: the states of two metrics fed halves of the data,
    summed, give the metric over all of it (also when one half is empty)."""
    y = np.eye(3)[rng.integers(0, 3, size=20)]
    p = rng.random((20, 3))
    p /= p.sum(axis=1, keepdims=True)
    full = make()
    full.update_state(y, p)
    for cut in (7, 20):
        a, b = make(), make()
        a.update_state(y[:cut], p[:cut])
        if cut < 20:
            b.update_state(y[cut:], p[cut:])
        sa, sb = a.get_state(), b.get_state()
        summed = {}
        for k in sa:
            x1, x2 = sa[k], sb[k]
            if x2.size == 0 and x1.size:  # an unused lazily-shaped state
                x2 = np.zeros_like(x1)
            summed[k] = x1 + x2
        merged = make()
        merged.set_state(summed)
        np.testing.assert_allclose(merged.result(), full.result(), rtol=1e-12, atol=1e-15)


def test_metric_state_errors():
    class Custom(metrics.Metric):
        def update_state(self, y_true, y_pred, mask=None, sample_weight=None):
            pass

    with pytest.raises(NotImplementedError, match="_state_attrs"):
        Custom().get_state()
    with pytest.raises(ValueError, match="entries"):
        metrics.CategoricalAccuracy().set_state({"total": np.zeros(())})


def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(ImportError, match=r'pip install "rnnkit\[mpi\]"'):
        dist.init()


def test_fit_distributed_must_be_a_bool():
    model = W.keras_model("sgd")
    x, y = W.keras_data(8)
    with pytest.raises(TypeError, match="distributed: expected a bool"):
        model.fit(x, y, epochs=1, verbose=0, distributed="yes")
