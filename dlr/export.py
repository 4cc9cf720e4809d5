"""Models out: a fitted model as an ONNX graph, for serving without dlr or Python.

The graph follows skl2onnx's conventions for classifiers (with ``zipmap=False``): one input
``X`` (N, n_features) float32, and two outputs, ``label`` (N,) — the predicted class, int64 or
string like ``classes_`` — and ``probabilities`` (N, K) float32. Inside, the features are cast
to float64 and the logits, σ (binary) or softmax (multinomial) and the arg-max are computed in
float64 with dlr's coefficients, which are on the original feature scale (``standardize=True``
is folded into them at fit time): the probabilities are dlr's, rounded once to float32.
"""

import os

import numpy as np

from dlr.atomic import staged
from dlr.errors import DlrError, ModelError

#: The ONNX operator set the graph declares (Softmax per axis needs ≥ 13).
OPSET = 17
#: The ONNX IR version of that operator set, so that older runtimes can load the file.
IR_VERSION = 8


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise DlrError(
            "ONNX export needs the onnx package: pip install onnx (or the dlr 'onnx' extra)"
        ) from None
    return onnx


def to_onnx(model):
    """The ONNX ``ModelProto`` of a fitted :class:`dlr.LogisticRegression` (see the module).

    Parameters
    ----------
    model : dlr.LogisticRegression
        Fitted: ``coef_`` (1, n) and ``intercept_`` (1,) for two classes, (K, n) and (K,) for
        K ≥ 3.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker``.
    """
    onnx = _require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    from dlr import __version__

    if not hasattr(model, "coef_"):
        raise ModelError("cannot export a model that is not fitted yet; call fit first")
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    classes = np.asarray(model.classes_)
    k, n = coef.shape
    if classes.dtype.kind in "biu":
        labels = numpy_helper.from_array(classes.astype(np.int64), "classes")
        label_type = TensorProto.INT64
    elif classes.dtype.kind in "US":
        labels = helper.make_tensor("classes", TensorProto.STRING, classes.shape, classes.tolist())
        label_type = TensorProto.STRING
    else:
        raise ModelError(
            f"cannot export classes of dtype {classes.dtype} to ONNX: integer or string labels only"
        )
    init = [
        numpy_helper.from_array(coef.T.copy(), "coef_t"),
        numpy_helper.from_array(intercept, "intercept"),
        labels,
    ]
    nodes = [
        helper.make_node("Cast", ["X"], ["x64"], to=TensorProto.DOUBLE),
        helper.make_node("MatMul", ["x64", "coef_t"], ["xw"]),
        helper.make_node("Add", ["xw", "intercept"], ["logits"]),
    ]
    if k == 1:
        # p = σ(z), and [1 − p, p] as dlr's scoring.probabilities computes them.
        init.append(numpy_helper.from_array(np.ones(1), "one"))
        nodes += [
            helper.make_node("Sigmoid", ["logits"], ["p1"]),
            helper.make_node("Sub", ["one", "p1"], ["p0"]),
            helper.make_node("Concat", ["p0", "p1"], ["p64"], axis=1),
        ]
    else:
        nodes.append(helper.make_node("Softmax", ["logits"], ["p64"], axis=1))
    nodes += [
        # The arg-max of the float64 probabilities: the label dlr's predict gives.
        helper.make_node("ArgMax", ["p64"], ["index"], axis=1, keepdims=0),
        helper.make_node("Gather", ["classes", "index"], ["label"], axis=0),
        helper.make_node("Cast", ["p64"], ["probabilities"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "dlr_logistic_regression",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n])],
        [
            helper.make_tensor_value_info("label", label_type, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(classes)]),
        ],
        initializer=init,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="dlr",
        producer_version=__version__,
        doc_string=(
            f"dlr LogisticRegression, {len(classes)} classes, {n} features: label and "
            "probabilities of X (N, n_features)"
        ),
    )
    helper.set_model_props(proto, {"classes": repr(classes.tolist())})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, path: str, *, overwrite: bool = True) -> None:
    """Write ``model`` (a fitted :class:`dlr.LogisticRegression`) as an ONNX file at ``path``,
    atomically (temporary file, fsync, rename); see :func:`to_onnx` for the graph."""
    data = to_onnx(model).SerializeToString()
    try:
        with staged(os.fspath(path), overwrite=overwrite) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
    except FileExistsError:
        raise DlrError(f"'{path}' exists; choose another path or pass --overwrite") from None
