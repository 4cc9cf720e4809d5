"""Warm starts: what a fit started from an earlier model (``fit(init=model)``) carries over.

Three things, each saving passes over the data:

- **The weights.** θ₀ is the model's ``[coef_ | intercept_]`` in the new fit's solver coordinates
  (:meth:`dlr.objective.Objective.from_effective`), and F(θ₀) is evaluated at exactly the
  model's weights (:func:`exact_weights`).
- **The evaluation at them, in the first pass** (:func:`first_point`). The weights are known
  before the data are read, so the first pass's task for each chunk also sums the loss and
  gradient there while the chunk is in the CPU cache (:class:`dlr.engine.Point`), and
  ``solver.init`` makes no pass of its own: the same kernel on the same chunks, added in the
  same order, so the same bits as that pass. Only when nothing the kernel needs waits for the
  first pass: the model gives the classes; ``class_weight="balanced"`` needs the label counts
  and keeps the separate pass.
- **L-BFGS's memory** (:func:`saved_memory`, :func:`carried_memory`). The final correction
  pairs are saved with the model on the original feature scale
  (:attr:`dlr.model_io.FittedModel.lbfgs_memory_`) and mapped into the new fit's solver
  coordinates, whose scaling comes from the new data's moments: s like a point difference
  (Θ_eff = Θ·Mᵀ), y like a gradient difference (∇_eff = ∇_Θ·M⁻¹), so sᵀy is the same in both.
  The new objective differs from the one the pairs were measured on (more rows; the penalty
  weighs 1/(C·S) with the new total weight S), so they approximate its curvature — all a
  quasi-Newton memory ever does, and L-BFGS replaces them with the new data's pairs as it
  goes — while the optimum reached is the new data's, where its gradient vanishes. Without
  them the first step is a scaled steepest-descent step, slow even from near the optimum. A
  model without pairs (another solver, or saved before dlr kept them), a fit with another
  solver, or pairs of another shape start with an empty memory, as a cold fit does (logged at
  debug level).
"""

import logging

import numpy as np

from dlr.engine import Labels, Point
from dlr.errors import DlrError
from dlr.objective import Objective, class_weights
from dlr.solvers.lbfgs import LbfgsState

log = logging.getLogger("dlr")


def exact_weights(model, fit_intercept: bool, standardize: bool) -> np.ndarray | None:
    """The weights ``[coef_ | intercept_]`` (k, n + 1) float64 of ``model``, if the fit can
    represent them exactly and so evaluate F(θ₀) there; None when it cannot: without an
    intercept, where a nonzero intercept, or with ``standardize`` the shift of the centred
    features, is not a coordinate of the fit (θ₀ is then their projection)."""
    weights = np.column_stack([model.coef_, model.intercept_]).astype(np.float64)
    if not fit_intercept and (standardize or weights[:, -1].any()):
        return None
    return weights


def first_point(
    weights: np.ndarray | None, classes, n_features: int, decoded, class_weight, hessian: bool
) -> Point | None:
    """Where the first pass over the training data (of ``n_features`` features) should also
    evaluate the kernel, for a fit from ``weights`` (:func:`exact_weights`) of a model with
    ``classes`` (K,); None when it cannot know the labels before that pass, or the model does
    not fit the data (the fit refuses it once the first pass has read the labels).

    ``decoded`` (K,) are the in-memory data's sorted labels, which the kernel sees as their
    codes (None for a dataset, whose labels it sees as they are); ``class_weight`` is the
    estimator's, with labels so encoded; ``hessian``: whether the solver's first evaluation
    includes the Hessian. None also for weights all zero, which need no pass anyway.
    """
    if weights is None or not weights.any() or weights.shape[1] != n_features + 1:
        return None
    if isinstance(class_weight, str):  # "balanced": from the label counts of the first pass
        return None
    classes = np.asarray(classes)
    if decoded is not None:
        if not np.isin(classes, decoded).all():
            return None
        classes = np.searchsorted(decoded, classes)
    if classes.dtype.kind not in "iu":
        return None
    classes = classes.astype(np.int64)
    try:
        labels = Labels(classes, class_weights(class_weight, classes, np.ones(len(classes))))
    except DlrError:
        return None  # class_weight names other labels: the fit says so after the first pass
    return Point(weights, labels, hessian)


def saved_memory(objective: Objective, state) -> np.ndarray | None:
    """(2, q, k, n + 1) float64: the correction pairs of a final L-BFGS ``state`` on the
    original feature scale — ``[0]`` the s, ``[1]`` the y, oldest first — as a model keeps them;
    None for another solver's state, or no pair."""
    if not isinstance(state, LbfgsState) or not state.s:
        return None
    s = np.stack([objective.effective(v) for v in state.s])
    y = np.stack([objective.gradient_to_effective(v) for v in state.y])
    return np.stack([s, y])


def carried_memory(objective: Objective, model, solver: str) -> dict:
    """What ``solver.init`` takes from ``model`` besides its weights: for L-BFGS the pairs
    ``s``, ``y`` of its ``lbfgs_memory_`` in ``objective``'s solver coordinates (p,), else {}
    (see the module for when, and the debug record that says why)."""
    pairs = getattr(model, "lbfgs_memory_", None)
    if solver != "lbfgs":
        if pairs is not None:
            log.debug("warm start: the model's L-BFGS memory is not used by solver %s", solver)
        return {}
    if pairs is None:
        log.debug(
            "warm start: the model (solver %s) has no saved L-BFGS memory; starting with an "
            "empty one",
            getattr(model, "solver_", None),
        )
        return {}
    expected = (objective.k, objective.n_features + 1)
    if pairs.ndim != 4 or pairs.shape[0] != 2 or pairs.shape[2:] != expected:
        log.debug(
            "warm start: the model's L-BFGS memory has shape %s, this fit needs (2, q, %d, %d);"
            " starting with an empty one",
            pairs.shape,
            *expected,
        )
        return {}
    s = tuple(objective.from_effective(v) for v in pairs[0])
    y = tuple(objective.gradient_from_effective(v) for v in pairs[1])
    log.debug("warm start: carrying %d L-BFGS correction pairs from the model", len(s))
    return {"s": s, "y": y}
