"""Warm starts: a fit from an earlier model carries its weights, evaluates them in the first pass,
and continues with its L-BFGS memory (see dlr/warm.py)."""

import json
import logging

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import dlr
from dlr import model_io, training, warm
from dlr.engine import Engine
from dlr.errors import DlrError, ModelError
from dlr.objective import Objective
from dlr.sources import from_arrays
from dlr.synthetic import make_chunk, true_weights

LBFGS = {"solver": "lbfgs", "tol": 1e-8, "max_iter": 200}


@pytest.fixture(scope="module")
def batches():
    """A day of 20000 rows and the next day's 2000 (+10 %) of the same model, 16 features."""
    w, b = true_weights(16, 3)
    X, y = make_chunk(0, 22000, w, b, 3, np.float32)
    return (X[:20000], y[:20000]), (X, y)


@pytest.fixture(scope="module")
def champion(batches):
    (X, y), _ = batches
    return dlr.LogisticRegression(**LBFGS).fit(X, y)


def without_memory(model) -> dlr.LogisticRegression:
    """``model`` as one saved before models kept L-BFGS's memory."""
    clone = dlr.LogisticRegression(**model.get_params())
    model_io.set_fitted(clone, model_io.fitted_of(model)._replace(lbfgs_memory_=None))
    return clone


def assert_same_fit(a, b):
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)


# --- L-BFGS's memory ----------------------------------------------------------------------


def test_after_ten_percent_more_rows_a_warm_start_reaches_the_cold_optimum_in_half_the_passes(
    batches, champion
):
    _, (X, y) = batches
    cold = dlr.LogisticRegression(**LBFGS).fit(X, y)
    warm_fit = dlr.LogisticRegression(**LBFGS).fit(X, y, init=champion)
    assert cold.converged_ and warm_fit.converged_
    f_cold, f_warm = cold.loss_history_[-1], warm_fit.loss_history_[-1]
    assert abs(f_warm - f_cold) <= 1e-12 * abs(f_cold)
    np.testing.assert_allclose(warm_fit.coef_, cold.coef_, rtol=0, atol=1e-6)
    assert warm_fit.n_passes_ <= 0.5 * cold.n_passes_
    # the memory is what makes the difference: the same start without it takes more passes
    forgetful = dlr.LogisticRegression(**LBFGS).fit(X, y, init=without_memory(champion))
    assert abs(forgetful.loss_history_[-1] - f_cold) <= 1e-12 * abs(f_cold)
    assert forgetful.n_passes_ > warm_fit.n_passes_


def test_the_memory_is_the_final_correction_pairs_on_the_original_feature_scale(champion):
    memory = champion.lbfgs_memory_
    assert memory.shape == (2, 10, 1, 17) and memory.dtype == np.float64
    s, y = champion.state_.s, champion.state_.y
    assert memory.shape[1] == len(s) == len(y)
    # sᵀy does not depend on the coordinates: the pairs were mapped, not copied
    for q in range(len(s)):
        saved = float(np.sum(memory[0, q] * memory[1, q]))
        assert saved == pytest.approx(float(s[q] @ y[q]), rel=1e-10)
    assert not np.array_equal(memory[0, -1].ravel(), s[-1])  # the scaling was undone


def test_point_and_gradient_differences_map_between_scalings_keeping_their_inner_product():
    rng = np.random.default_rng(4)
    scales = np.array([1.0, 30.0, 0.01])
    X = rng.standard_normal((500, 3)) * scales + [5.0, -2.0, 0.0]
    y = (rng.random(500) < 0.4).astype(int)

    def objective(rows):
        engine = Engine(from_arrays(X[:rows], y[:rows]), moments=True)
        return Objective(engine, engine.summarize(), precondition=True)

    a, b = objective(450), objective(500)  # different moments: different solver coordinates
    s, g = rng.standard_normal(a.n_params), rng.standard_normal(a.n_params)
    s_eff, g_eff = a.effective(s), a.gradient_to_effective(g)
    s_b, g_b = b.from_effective(s_eff), b.gradient_from_effective(g_eff)
    assert not np.allclose(s_b, s)
    assert s_b @ g_b == pytest.approx(s @ g, rel=1e-12)
    np.testing.assert_allclose(a.from_effective(s_eff), s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.gradient_from_effective(g_eff), g, rtol=1e-12, atol=1e-12)


def test_the_memory_round_trips_through_save_and_load_bit_for_bit(champion, tmp_path):
    path = tmp_path / "model"
    champion.save(str(path))
    entry = json.loads((path / "model.json").read_text())["arrays"]["lbfgs_memory"]
    assert entry["file"] == "lbfgs_memory.npy" and len(entry["sha256"]) == 64
    loaded = dlr.load(str(path))
    np.testing.assert_array_equal(loaded.lbfgs_memory_, champion.lbfgs_memory_)
    assert loaded.lbfgs_memory_.tobytes() == champion.lbfgs_memory_.tobytes()
    data = bytearray((path / "lbfgs_memory.npy").read_bytes())
    data[-1] ^= 1
    (path / "lbfgs_memory.npy").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="lbfgs_memory.npy.*checksum"):
        dlr.load(str(path))


@pytest.mark.parametrize("solver", ["newton", "gd"])
def test_other_solvers_save_no_memory(batches, tmp_path, solver):
    (X, y), _ = batches
    model = dlr.LogisticRegression(solver=solver, max_iter=3, tol=0).fit(X[:2000], y[:2000])
    assert not hasattr(model, "lbfgs_memory_")
    model.save(str(tmp_path / "model"))
    assert not (tmp_path / "model" / "lbfgs_memory.npy").exists()
    assert not hasattr(dlr.load(str(tmp_path / "model")), "lbfgs_memory_")


def test_a_model_saved_without_memory_warm_starts_with_an_empty_one(batches, champion, tmp_path):
    _, (X, y) = batches
    path = tmp_path / "older"
    champion.save(str(path))
    meta = json.loads((path / "model.json").read_text())
    del meta["arrays"]["lbfgs_memory"]  # as models were written before the memory was kept
    (path / "model.json").write_text(json.dumps(meta))
    (path / "lbfgs_memory.npy").unlink()
    older = dlr.load(str(path))
    assert not hasattr(older, "lbfgs_memory_")
    fit = dlr.LogisticRegression(**LBFGS).fit(X, y, init=str(path))
    assert_same_fit(fit, dlr.LogisticRegression(**LBFGS).fit(X, y, init=without_memory(champion)))


def test_a_mismatched_memory_or_solver_falls_back_to_the_start_without_it(
    batches, champion, caplog
):
    _, (X, y) = batches
    plain = dlr.LogisticRegression(**LBFGS).fit(X, y, init=without_memory(champion))
    odd = without_memory(champion)
    odd.lbfgs_memory_ = champion.lbfgs_memory_[:, :, :, :-1]  # pairs of another shape
    with caplog.at_level(logging.DEBUG, logger="dlr"):
        fit = dlr.LogisticRegression(**LBFGS).fit(X, y, init=odd)
    assert "L-BFGS memory has shape (2, 10, 1, 16)" in caplog.text
    assert_same_fit(fit, plain)
    newton = {"solver": "newton", "tol": 1e-8}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="dlr"):
        other = dlr.LogisticRegression(**newton).fit(X, y, init=champion)
    assert "not used by solver newton" in caplog.text
    assert_same_fit(
        other, dlr.LogisticRegression(**newton).fit(X, y, init=without_memory(champion))
    )


def test_a_warm_started_run_resumed_from_its_checkpoint_equals_the_uninterrupted_one(
    batches, champion, tmp_path
):
    _, (X, y) = batches
    full = dlr.LogisticRegression(**LBFGS).fit(X, y, init=champion)
    ckpt = str(tmp_path / "ckpt")
    with pytest.warns(ConvergenceWarning):  # stopped after one iteration, as if killed
        dlr.LogisticRegression(**{**LBFGS, "max_iter": 1}).fit(X, y, init=champion, checkpoint=ckpt)
    resumed = dlr.LogisticRegression(**LBFGS).fit(X, y, init=champion, checkpoint=ckpt, resume=True)
    assert_same_fit(resumed, full)
    np.testing.assert_array_equal(resumed.lbfgs_memory_, full.lbfgs_memory_)


def test_a_checkpoint_resumes_only_from_the_start_it_was_made_from(batches, champion, tmp_path):
    _, (X, y) = batches
    ckpt = str(tmp_path / "ckpt")
    with pytest.warns(ConvergenceWarning):  # stopped after one iteration, as if killed
        dlr.LogisticRegression(**{**LBFGS, "max_iter": 1}).fit(X, y, init=champion, checkpoint=ckpt)
    other = without_memory(champion)  # the same weights without the L-BFGS pairs
    for init in (None, other):
        with pytest.raises(DlrError, match="started from other initial weights"):
            dlr.LogisticRegression(**LBFGS).fit(X, y, init=init, checkpoint=ckpt, resume=True)
    resumed = dlr.LogisticRegression(**LBFGS).fit(X, y, init=champion, checkpoint=ckpt, resume=True)
    assert_same_fit(resumed, dlr.LogisticRegression(**LBFGS).fit(X, y, init=champion))


def test_a_checkpoint_from_before_the_start_was_recorded_still_resumes(
    batches, champion, tmp_path, monkeypatch
):
    _, (X, y) = batches
    ckpt = str(tmp_path / "ckpt")
    recorded = training._meta
    with monkeypatch.context() as m:  # a checkpoint as dlr wrote them before
        m.setattr(
            training, "_meta", lambda *a: {k: v for k, v in recorded(*a).items() if k != "start"}
        )
        with pytest.warns(ConvergenceWarning):
            dlr.LogisticRegression(**{**LBFGS, "max_iter": 1}).fit(
                X, y, init=champion, checkpoint=ckpt
            )
    resumed = dlr.LogisticRegression(**LBFGS).fit(X, y, init=champion, checkpoint=ckpt, resume=True)
    assert_same_fit(resumed, dlr.LogisticRegression(**LBFGS).fit(X, y, init=champion))


# --- the evaluation at the start, in the first pass ----------------------------------------


def fit_both_ways(monkeypatch, data, params, init, **fit_options):
    """The fit with the start's evaluation fused into the first pass, and with its own pass."""
    fused = dlr.LogisticRegression(**params).fit(data, init=init, **fit_options)
    with monkeypatch.context() as m:
        m.setattr(warm, "first_point", lambda *args: None)
        separate = dlr.LogisticRegression(**params).fit(data, init=init, **fit_options)
    return fused, separate


@pytest.mark.parametrize(
    "params",
    [LBFGS, {"solver": "newton", "tol": 1e-8}, {"solver": "gd", "max_iter": 5, "tol": 0}],
    ids=["lbfgs", "newton", "gd"],
)
@pytest.mark.parametrize("cache_size", ["auto", 0], ids=["cached", "streamed"])
def test_the_start_evaluated_in_the_first_pass_gives_the_same_bits_one_pass_sooner(
    dataset, monkeypatch, params, cache_size
):
    data, valid = dataset(900, 6, 200, seed=1), dataset(300, 6, 200, seed=2)
    params = {**params, "cache_size": cache_size}
    start = dlr.LogisticRegression(solver=params["solver"], max_iter=2, tol=0).fit(data)
    fused, separate = fit_both_ways(monkeypatch, data, params, start, validation_data=valid)
    assert_same_fit(fused, separate)
    np.testing.assert_array_equal(fused.validation_loss_history_, separate.validation_loss_history_)
    assert fused.n_passes_ == separate.n_passes_ - 1


def test_balanced_class_weights_need_the_first_pass_first(dataset, monkeypatch):
    data = dataset(900, 6, 200, seed=1)
    params = {**LBFGS, "class_weight": "balanced"}
    start = dlr.LogisticRegression(**params).fit(data)
    weights = warm.exact_weights(start, fit_intercept=True, standardize=False)
    assert warm.first_point(weights, start.classes_, 6, None, "balanced", False) is None
    fused, separate = fit_both_ways(monkeypatch, data, params, start)
    assert_same_fit(fused, separate)
    assert fused.n_passes_ == separate.n_passes_


def test_string_labels_in_memory_are_evaluated_in_the_first_pass_as_their_codes(monkeypatch):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((600, 4))
    y = np.where(X[:, 0] - X[:, 1] + rng.standard_normal(600) > 0, "spam", "ham")
    params = {**LBFGS, "class_weight": {"spam": 2.0}}
    start = dlr.LogisticRegression(**{**params, "max_iter": 2, "tol": 0}).fit(X, y)
    fused = dlr.LogisticRegression(**params).fit(X, y, init=start)
    with monkeypatch.context() as m:
        m.setattr(warm, "first_point", lambda *args: None)
        separate = dlr.LogisticRegression(**params).fit(X, y, init=start)
    assert_same_fit(fused, separate)
    assert fused.n_passes_ == separate.n_passes_ - 1
