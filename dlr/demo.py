"""``dlr demo``: the whole story on a dataset several chunks long, in under a minute.

Writes a synthetic dataset, trains on it out-of-core through dask, then trains the in-memory
NumPy oracle on the same data and shows that both give the same weights and loss curve.
"""

import os
import shutil
import tempfile

import numpy as np
import zarr

from dlr import oracle, scoring
from dlr.dataset import open_dataset
from dlr.estimator import LogisticRegression
from dlr.sources import from_dataset
from dlr.synthetic import make_dataset


def ascii_curve(values, width: int = 60, height: int = 10) -> str:
    """A text plot of ``values`` (one column per sampled point), highest value on top."""
    v = np.asarray(values, dtype=np.float64)
    cols = v[np.linspace(0, len(v) - 1, min(width, len(v))).round().astype(int)]
    lo, hi = float(cols.min()), float(cols.max())
    rows = (
        np.zeros(len(cols), dtype=int)
        if hi == lo
        else ((cols - lo) / (hi - lo) * (height - 1)).round().astype(int)
    )
    lines = []
    for r in range(height - 1, -1, -1):
        label = f"{hi:9.5f} " if r == height - 1 else f"{lo:9.5f} " if r == 0 else " " * 10
        lines.append(label + "|" + "".join("*" if h == r else " " for h in rows))
    lines.append(" " * 10 + "+" + "-" * len(cols) + f"  iterations 0..{len(v) - 1}")
    return "\n".join(lines)


def relative_error(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(float).tiny))


def run_demo(directory, *, n_samples, n_features, chunk_samples, max_iter, learning_rate, echo):
    """Run the demo in ``directory`` (default: a new temporary directory). The model and the
    loss curve (``loss.png``, if matplotlib is installed) are kept there; the dataset is removed
    at the end unless ``directory`` was given."""
    keep = directory is not None
    directory = directory or tempfile.mkdtemp(prefix="dlr-demo-")
    os.makedirs(directory, exist_ok=True)
    data, model_path = os.path.join(directory, "data.zarr"), os.path.join(directory, "model")
    curve = os.path.join(directory, "loss.png")
    try:
        meta = make_dataset(
            data,
            n_samples,
            n_features,
            chunk_samples=chunk_samples,
            dtype="float64",
            overwrite=True,
        )
        ds = open_dataset(data)
        echo(
            f"1. wrote {data}: {n_samples} samples × {n_features} features (float64), "
            f"{ds.n_chunks} chunks of {chunk_samples} samples"
        )

        echo(
            f"2. training with dask, one pass over the chunks per iteration "
            f"(learning rate {learning_rate}, {max_iter} iterations):"
        )
        model = LogisticRegression(
            solver="gd",
            C=np.inf,
            learning_rate=learning_rate,
            max_iter=max_iter,
            tol=0,
            cache_size=0,
            verbose=True,
        ).fit(data)
        model.save(model_path, overwrite=True)
        echo(
            f"   {model.n_iter_[0]} iterations in {model.fit_seconds_:.2f}s, streaming every chunk "
            f"from zarr each pass; model saved to {model_path}"
        )
        echo("\n   loss J(w, b) per iteration:")
        echo("\n".join("   " + line for line in ascii_curve(model.loss_history_).splitlines()))
        try:
            from dlr.plotting import plot_loss

            plot_loss(model, curve)
            echo(f"   (the same curve as an image: {curve})")
        except ImportError:
            echo("   (pip install matplotlib to get it as a PNG image too)")

        echo("\n3. the NumPy oracle (the lecture's equations, whole dataset in memory):")
        group = zarr.open_group(data, mode="r")
        X, Y = group["X"][:].T, group["y"][:][None, :].astype(np.float64)
        ref = oracle.gradient_descent(X, Y, learning_rate, max_iter)
        rows = [
            ("w", relative_error(model.coef_, ref.w)),
            ("b", relative_error(model.intercept_, ref.b)),
            ("loss history", relative_error(model.loss_history_, ref.losses)),
        ]
        for name, err in rows:
            echo(f"   relative difference in {name:13s} {err:.2e}")
        verdict = "agree" if max(err for _, err in rows) <= 1e-10 else "DISAGREE"
        echo(f"   dlr and the oracle {verdict} (tolerance 1e-10)")

        metrics = scoring.evaluate(from_dataset(ds), model.theta_, model.classes_)
        echo(
            f"\n4. evaluation: log-loss {metrics['log_loss']:.4f}, accuracy "
            f"{metrics['accuracy']:.4f}, ROC AUC {metrics['roc_auc']:.4f}"
        )
        echo(
            f"   true weights  {np.round(meta['true_coef'][:4], 3)}...  "
            f"b {meta['true_intercept']:.3f}"
        )
        echo(f"   learned       {np.round(model.coef_[0][:4], 3)}...  b {model.intercept_[0]:.3f}")

        newton = LogisticRegression(solver="newton", C=np.inf, tol=1e-10).fit(data)
        echo(
            f"\n5. solver='newton' reaches the optimum (loss {newton.loss_history_[-1]:.8f}) in "
            f"{newton.n_passes_} passes over the data; gradient descent is at "
            f"{model.loss_history_[-1]:.8f} after {model.n_passes_}."
        )
        if verdict != "agree":
            raise SystemExit(1)
        kept = "the model and the loss curve are" if os.path.exists(curve) else "the model is"
        echo(f"\n{kept} kept in {directory}")
    finally:
        if not keep:
            shutil.rmtree(data, ignore_errors=True)  # the dataset only
