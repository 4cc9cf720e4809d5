"""``dlr train --plot``: the loss curve as an image (matplotlib, an optional dependency)."""

import os

from dlr._version import DISTRIBUTION
from dlr.atomic import staged
from dlr.errors import DlrError


def require_matplotlib() -> None:
    """Fail before training, not after, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DlrError(f"--plot needs matplotlib: pip install '{DISTRIBUTION}[plot]'") from None


def plot_loss(model, path: str) -> None:
    """Write the training (and validation) loss per iteration to ``path``, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(range(len(model.loss_history_)), model.loss_history_, marker=".", label="training")
    if hasattr(model, "validation_loss_history_"):
        history = model.validation_loss_history_
        ax.plot(range(len(history)), history, marker=".", label="validation")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"dlr {model.solver_}: {model.n_iter_[0]} iterations, {model.n_passes_} passes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    ext = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    with staged(path, overwrite=True) as tmp:
        fig.savefig(tmp, format=ext)
    plt.close(fig)
