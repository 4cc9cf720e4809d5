"""The objective a solver minimizes, in the solver's coordinates, over the whole dataset.

With weights s_i (sample weight × class weight), S = Σ s_i, penalty strength C and mixing r
(``l1_ratio``), scikit-learn's objective ``C·Σ s_i ℓ_i + (1 − r)/2·‖W‖² + r·‖W‖₁`` divided by
C·S (same minimizer, step sizes independent of m):

    F(θ) = (1/S)·Σ s_i ℓ_i  +  λ₂/2·‖W‖²  +  λ₁·‖W‖₁,     λ₂ = (1 − r)/(C·S),  λ₁ = r/(C·S)

The smooth part f (everything but the L1 term) is what :meth:`Objective.__call__` returns; the L1
weights per coordinate are :attr:`Objective.l1`. Intercepts are never penalized.

Coordinates: θ is the row-major flattening of Θ (k, n + 1) = [W | b], without the intercept
column when ``fit_intercept`` is False. Θ applies to scaled features x' = (x − μ)/σ; the kernel
only ever sees the equivalent parameters on the original scale, Θ_eff = Θ·Mᵀ, so the data are
never rewritten: M = [[diag(1/σ), 0], [−(μ/σ)ᵀ, 1]]. The model decides what is penalized:

- ``standardize``: μ, σ are the features' means and standard deviations (weighted by the sample
  weights, as ``StandardScaler().fit(X, sample_weight=s)``), and the penalty applies to the
  standardized coefficients W — a different model from the unstandardized one.
- ``precondition`` (without ``standardize``): the same model as on the original features. The
  scaled coordinates only make the problem well conditioned for the solver — a diagonal (Jacobi)
  preconditioner: σ_j² = var_j + λ₂/h is the j-th diagonal of the Hessian at θ = 0 divided by
  its value h for a unit-variance feature (h = 1/4 binary, (K − 1)/K² multinomial), so every
  scaled coordinate starts with the curvature of a standardized, unpenalized one. μ centres the
  features when there is an intercept to absorb the shift (else μ = 0 and var_j is the second
  moment about 0). The penalty stays on the original coefficients W_eff = W·diag(1/σ):
  λ₂/2·Σ_j (w_j/σ_j)² and λ₁·Σ_j |w_j|/σ_j, exactly scikit-learn's objective.
- neither (gradient descent, the seed's algorithm): μ = 0, σ = 1.
"""

import numpy as np

from dlr.engine import Engine, Labels, labels_from
from dlr.errors import DataError, DlrError
from dlr.linalg import dot, matmul
from dlr.solvers.common import Evaluation


def class_weights(class_weight, classes: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """(K,) weight per class: None, a {label: weight} dict, or ``"balanced"``: S / (K·S_c) with
    S_c the summed sample weights of class c (sample counts without weights) and K the number of
    classes in y, as in scikit-learn. A class whose samples all weigh zero gets weight 0 (any
    weight gives its samples weight 0; scikit-learn's S / 0 makes them NaN)."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str) and class_weight == "balanced":
        present = weights > 0
        balanced = np.zeros(len(classes))
        balanced[present] = weights.sum() / (len(classes) * weights[present])
        return balanced
    if isinstance(class_weight, dict):
        unknown = set(class_weight) - set(classes.tolist())
        if unknown:
            raise DlrError(
                f"class_weight names labels {sorted(unknown)} absent from y "
                f"(classes {classes.tolist()})"
            )
        return np.array([float(class_weight.get(c, 1.0)) for c in classes.tolist()])
    raise DlrError(f"class_weight must be None, 'balanced' or a dict, got {class_weight!r}")


class Objective:
    """Loss, gradient and Hessian of the training data in solver coordinates (see module)."""

    def __init__(
        self,
        engine: Engine,
        summary: dict,
        *,
        C: float = 1.0,
        l1_ratio: float = 0.0,
        fit_intercept: bool = True,
        standardize: bool = False,
        precondition: bool = False,
        class_weight=None,
        validation: Engine | None = None,
        validation_summary: dict | None = None,
    ):
        self.engine = engine
        classes = labels_from(summary, engine.source.origin)
        self.labels = Labels(classes, class_weights(class_weight, classes, summary["weights"]))
        weights = summary["weights"]
        if self.labels.class_weight is not None:
            weights = weights * self.labels.class_weight
        self.total_weight = float(weights.sum())
        if not self.total_weight > 0:
            raise DataError(f"the sample weights of {engine.source.origin} sum to zero")
        n = engine.source.n_features
        self.k = 1 if len(classes) == 2 else len(classes)
        self.n_features = n
        strength = 0.0 if np.isinf(C) else 1.0 / (C * self.total_weight)
        l2, l1 = strength * (1.0 - l1_ratio), strength * l1_ratio
        self.mean, self.scale = np.zeros(n), np.ones(n)
        penalty_scale = np.ones(n)  # 1/σ_j where W_eff, not W, is penalized
        if standardize:  # the summary holds moments (Engine(moments=True))
            self.mean = summary["mean"]
            scale = np.sqrt(summary["m2"] / summary["moment_weight"])
            self.scale = np.where(scale > 0, scale, 1.0)
        elif precondition:
            var = summary["m2"] / summary["moment_weight"]
            if fit_intercept:
                self.mean = summary["mean"]
            else:
                var = var + summary["mean"] ** 2
            h = 0.25 if self.k == 1 else (self.k - 1) / self.k**2
            scale = np.sqrt(var + l2 / h)
            self.scale = np.where(scale > 0, scale, 1.0)
            penalty_scale = 1.0 / self.scale
        self.M = np.eye(n + 1)
        self.M[:n, :n] = np.diag(1.0 / self.scale)
        self.M[n, :n] = -self.mean / self.scale
        free = np.ones((self.k, n + 1), dtype=bool)
        free[:, n] = fit_intercept
        self.free = free.ravel()
        coef = np.zeros((self.k, n + 1), dtype=bool)
        coef[:, :n] = True
        self.is_coef = coef.ravel()[self.free]
        weights = np.zeros((self.k, n + 1))
        weights[:, :n] = penalty_scale
        weights = weights.ravel()[self.free]  # per coordinate: 1/σ_j, 1 or 0 (intercepts)
        #: (p,) per-coordinate L2 strength: ½·Σ l2_i·θ_i² is the L2 term in solver coordinates
        self.l2 = l2 * weights**2
        #: (p,) per-coordinate L1 strength, or None without an L1 term
        self.l1 = l1 * weights if l1 > 0 else None
        self.validation = validation
        if validation is not None:
            _check_validation_labels(validation_summary, classes, validation.source.origin)
            self.validation_count = float(validation_summary["weights"].sum())

    @property
    def n_params(self) -> int:
        return int(self.free.sum())

    def full(self, theta: np.ndarray) -> np.ndarray:
        """Θ (k, n + 1) in standardized coordinates from solver coordinates θ (p,)."""
        out = np.zeros(self.free.size)
        out[self.free] = theta
        return out.reshape(self.k, self.n_features + 1)

    def effective(self, theta: np.ndarray) -> np.ndarray:
        """Θ_eff (k, n + 1) = [W | b] on the original feature scale, as the kernel uses it."""
        return matmul(self.full(theta), self.M.T)

    def from_effective(self, theta_eff: np.ndarray) -> np.ndarray:
        """Solver coordinates θ of original-scale parameters Θ_eff (k, n + 1); also maps a
        difference of points (θ ↦ Θ_eff is linear)."""
        return matmul(theta_eff, np.linalg.inv(self.M).T).ravel()[self.free]

    def gradient_to_effective(self, grad: np.ndarray) -> np.ndarray:
        """A gradient (or a difference of gradients) (p,) in solver coordinates as the gradient
        with respect to Θ_eff (k, n + 1): ∇_eff = ∇_Θ·M⁻¹ (zero along coordinates not fitted),
        so that its inner product with a point difference is the same in both."""
        return matmul(self.full(grad), np.linalg.inv(self.M))

    def gradient_from_effective(self, grad_eff: np.ndarray) -> np.ndarray:
        """Solver coordinates (p,) of a gradient (difference) with respect to Θ_eff (k, n + 1)."""
        return matmul(grad_eff, self.M).ravel()[self.free]

    def __call__(
        self, theta: np.ndarray, hessian: bool = False, theta_eff: np.ndarray | None = None
    ) -> Evaluation:
        """f, ∇f (and ∇²f) at θ: one pass over the training data (and the validation data).

        ``theta_eff`` (k, n + 1): the original-scale parameters θ was converted from (a model's
        weights, by :meth:`from_effective`); the kernel is then evaluated at exactly those, not
        at their round trip through the scaling, and the engines' first pass may already hold
        the sums there (:class:`dlr.engine.Point`).
        """
        theta_eff = self.effective(theta) if theta_eff is None else theta_eff
        dsk, key = self.engine.partials_graph(theta_eff, self.labels, hessian)
        keys = [key]
        if self.validation is not None:
            vdsk, vkey = self.validation.partials_graph(
                theta_eff, Labels(self.labels.classes), False
            )
            dsk = {**dsk, **vdsk}
            keys.append(vkey)
        results = self.engine.compute(dsk, keys)
        total, S = results[0], self.total_weight
        grad = matmul(total["grad"], self.M).ravel()[self.free] / S
        penalty = self.l2 * theta
        loss = float(total["loss"]) / S + 0.5 * dot(penalty, theta)
        grad += penalty
        hess = None
        if hessian:
            hess = self._hessian_in_solver_coordinates(total["hess"])[np.ix_(self.free, self.free)]
            hess /= S
            hess[np.diag_indices_from(hess)] += self.l2
        validation_loss = None
        if self.validation is not None:
            validation_loss = float(results[1]["loss"]) / self.validation_count
        return Evaluation(loss, grad, hess, validation_loss)

    def _hessian_in_solver_coordinates(self, H: np.ndarray) -> np.ndarray:
        """Bᵀ·H·B for B = diag(M, …, M), the kernel's Hessian H (k(n+1), k(n+1)) taken to solver
        coordinates block by block: k(k+1)/2 products of size n + 1, not one of size k(n + 1)."""
        n1 = self.n_features + 1
        out = np.empty_like(H)
        for c in range(self.k):
            for d in range(c, self.k):
                block = H[c * n1 : (c + 1) * n1, d * n1 : (d + 1) * n1]
                out[c * n1 : (c + 1) * n1, d * n1 : (d + 1) * n1] = matmul(
                    matmul(self.M.T, block), self.M
                )
                if d != c:  # H is symmetric
                    out[d * n1 : (d + 1) * n1, c * n1 : (c + 1) * n1] = out[
                        c * n1 : (c + 1) * n1, d * n1 : (d + 1) * n1
                    ].T
        return out

    def l1_term(self, theta: np.ndarray) -> float:
        return 0.0 if self.l1 is None else dot(self.l1, np.abs(theta))


def _check_validation_labels(summary: dict, classes: np.ndarray, origin: str) -> None:
    unknown = np.setdiff1d(summary["labels"], classes)
    if unknown.size:
        raise DataError(
            f"validation labels in {origin} include {unknown.tolist()}, which the training data "
            f"does not have (classes {classes.tolist()})"
        )
