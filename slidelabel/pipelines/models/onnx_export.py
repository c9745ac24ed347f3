"""A trained model as an ONNX graph: raw float32 features in, probabilities over the categories out.

The graph computes what :meth:`TrainedModel.predict_proba` computes, in the same steps:
``features (N, D) -> (features - mean) / scale -> classifier -> tempered -> probabilities (N, K)``,
with 0 for the categories the classifier has no column for (excluded, or without labels). The
per-slide normalisation the project may apply before the model (``normalisation``) is not in it:
it needs the statistics of the whole slide, which a graph over a batch of rows does not see.

The classifier part is built from the model file's own arrays (:meth:`Classifier.to_state`), one
builder per model (:data:`EXPORTERS`): ``linear`` and ``mlp`` as MatMul/Add/Relu/Softmax, the trees
of ``random_forest`` and ``boosting`` as ai.onnx.ml ``TreeEnsembleRegressor`` nodes (the leaf class
probabilities, or the boosting's raw scores followed by its sigmoid or softmax), ``cnn`` through
``torch.onnx``. Trees compare in float64 with the stored thresholds, as slidelabel does, so a
feature value next to a threshold goes the same way.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import onnx
from onnx import NodeProto, TensorProto, helper, numpy_helper

from slidelabel import __version__
from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import Classifier, TrainedModel

__all__ = ["EXPORTERS", "INPUT", "OPSETS", "OUTPUT", "exportable_model", "model_to_onnx"]

#: Names of the graph's input (float32 ``(N, D)`` raw features) and output (float32 ``(N, K)``).
INPUT, OUTPUT = "features", "probabilities"
#: Operator sets the graphs use: the default domain and the ML one (tree ensembles).
OPSETS = {"": 17, "ai.onnx.ml": 3}

#: Nodes and constant tensors of one part of a graph.
Piece = tuple[list[NodeProto], list[TensorProto]]


def model_to_onnx(model: TrainedModel) -> onnx.ModelProto:
    """Return the checked ONNX graph of ``model`` (see the module docstring).

    Raises
    ------
    ParameterError
        If the model (or the one ``auto`` chose) has no ONNX builder here.
    """
    name, classifier = exportable_model(model)
    nodes = [helper.make_node("Sub", [INPUT, "feature_mean"], ["centred"]),
             helper.make_node("Div", ["centred", "feature_scale"], ["standardised"])]
    tensors = [_tensor("feature_mean", model.feature_mean_D, np.float32),
               _tensor("feature_scale", model.feature_scale_D, np.float32)]
    classifier_nodes, classifier_tensors = EXPORTERS[name](classifier, "standardised", "class_probabilities")
    nodes += classifier_nodes
    tensors += classifier_tensors
    probs = "class_probabilities"
    if model.temperature != 1.0:  # probs ** (1 / T), renormalised: softmax(log(probs) / T)
        nodes += [helper.make_node("Pow", [probs, "inverse_temperature"], ["powered"]),
                  helper.make_node("ReduceSum", ["powered", "class_axis"], ["powered_total"], keepdims=1),
                  helper.make_node("Div", ["powered", "powered_total"], ["tempered"])]
        tensors += [_tensor("inverse_temperature", np.array(1.0 / model.temperature), np.float32),
                    _tensor("class_axis", np.array([1]), np.int64)]
        probs = "tempered"
    # Adding zeros and multiplying by one are exact: the categories' columns are the classes' own.
    columns_C_K = np.zeros((len(model.trained_classes), len(model.categories)), np.float32)
    columns_C_K[np.arange(len(model.trained_classes)), model.trained_classes] = 1
    nodes.append(helper.make_node("MatMul", [probs, "class_columns"], [OUTPUT]))
    tensors.append(_tensor("class_columns", columns_C_K, np.float32))
    n_feats = len(model.feature_mean_D)
    graph = helper.make_graph(
        nodes, "slidelabel_model",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", n_feats])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", len(model.categories)])],
        tensors,
    )
    proto = helper.make_model(graph, producer_name="slidelabel", producer_version=__version__,
                              opset_imports=[helper.make_opsetid(domain, v) for domain, v in OPSETS.items()])
    onnx.checker.check_model(proto, full_check=True)
    return proto


def exportable_model(model: TrainedModel) -> tuple[str, Classifier]:
    """``(registered name, classifier)`` of the model that predicts: ``auto``'s choice for ``auto``.

    Raises
    ------
    ParameterError
        If that model has no ONNX builder in :data:`EXPORTERS`.
    """
    name, classifier = model.model_name, model.classifier
    if name == "auto":
        name, classifier = classifier.chosen, classifier.model
    if name not in EXPORTERS:
        raise ParameterError(f"the {name!r} model cannot be exported to ONNX; exportable: {', '.join(EXPORTERS)}")
    return name, classifier


def _tensor(name: str, array: np.ndarray, dtype: type) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name)


def _linear(classifier: Classifier, z: str, out: str) -> Piece:
    arrays = classifier.to_state().arrays
    return ([helper.make_node("MatMul", [z, "linear_weights"], ["linear_xw"]),
             helper.make_node("Add", ["linear_xw", "linear_bias"], ["linear_logits"]),
             helper.make_node("Softmax", ["linear_logits"], [out], axis=1)],
            [_tensor("linear_weights", arrays["weights"], np.float32),
             _tensor("linear_bias", arrays["bias"], np.float32)])


def _mlp(classifier: Classifier, z: str, out: str) -> Piece:
    arrays = classifier.to_state().arrays
    nodes, tensors, hidden = [], [], z
    for layer in (1, 2, 3):
        nodes += [helper.make_node("MatMul", [hidden, f"mlp_weights_{layer}"], [f"mlp_xw_{layer}"]),
                  helper.make_node("Add", [f"mlp_xw_{layer}", f"mlp_bias_{layer}"], [f"mlp_pre_{layer}"])]
        tensors += [_tensor(f"mlp_weights_{layer}", arrays[f"weights_{layer}"], np.float32),
                    _tensor(f"mlp_bias_{layer}", arrays[f"bias_{layer}"], np.float32)]
        if layer < 3:
            nodes.append(helper.make_node("Relu", [f"mlp_pre_{layer}"], [f"mlp_hidden_{layer}"]))
            hidden = f"mlp_hidden_{layer}"
    nodes.append(helper.make_node("Softmax", ["mlp_pre_3"], [out], axis=1))
    return nodes, tensors


def _forest(classifier: Classifier, z: str, out: str) -> Piece:
    """The mean of the trees' leaf class fractions, each leaf's normalised as the forest does."""
    arrays = classifier.to_state().arrays
    counts_T = arrays["node_counts"]
    leaf_M = arrays["left_child"] == -1
    values_M_C = arrays["values"] / arrays["values"].sum(axis=1, keepdims=True)
    return _tree_ensemble(
        "forest", z, out, counts_T, leaf_M, arrays["left_child"], arrays["right_child"], arrays["feature"],
        arrays["threshold"], arrays["missing_go_to_left"], leaf_values_M_R=values_M_C / len(counts_T),
        base_R=np.zeros(values_M_C.shape[1]))


def _boosting(classifier: Classifier, z: str, out: str) -> Piece:
    """The main booster's raw scores, then its sigmoid (two classes) or softmax."""
    arrays = classifier.to_state().arrays
    main_T = arrays["tree_booster"] == 0
    roots_T = arrays["tree_root"][main_T]
    ends_T = np.append(arrays["tree_root"][1:], len(arrays["value"]))[main_T]
    nodes_M = np.concatenate([np.arange(start, end) for start, end in zip(roots_T, ends_T)])
    shift_M = np.repeat(roots_T, ends_T - roots_T)  # children are numbered over all trees there
    leaf_M = arrays["leaf"][nodes_M]
    n_raw = arrays["baseline"].shape[1]
    onehot_T_R = np.eye(n_raw)[arrays["tree_target"][main_T]]
    leaf_values_M_R = arrays["value"][nodes_M, None] * np.repeat(onehot_T_R, ends_T - roots_T, axis=0)
    nodes, tensors = _tree_ensemble(
        "boosting", z, "boosting_sums", ends_T - roots_T, leaf_M, arrays["left"][nodes_M] - shift_M,
        arrays["right"][nodes_M] - shift_M, arrays["feature"][nodes_M], arrays["threshold"][nodes_M],
        arrays["missing_left"][nodes_M], leaf_values_M_R=leaf_values_M_R, base_R=arrays["baseline"][0])
    if n_raw == 1:  # two classes: the raw score is the second's log-odds
        nodes += [helper.make_node("Sigmoid", ["boosting_sums"], ["boosting_second"]),
                  helper.make_node("Sub", ["boosting_one", "boosting_second"], ["boosting_first"]),
                  helper.make_node("Concat", ["boosting_first", "boosting_second"], ["boosting_seen"], axis=1)]
        tensors.append(_tensor("boosting_one", np.ones(1), np.float32))
    else:
        nodes.append(helper.make_node("Softmax", ["boosting_sums"], ["boosting_seen"], axis=1))
    seen = arrays["seen_classes"]
    columns_R_C = np.zeros((len(seen), classifier.n_classes))
    columns_R_C[np.arange(len(seen)), seen] = 1
    nodes.append(helper.make_node("MatMul", ["boosting_seen", "boosting_columns"], [out]))
    tensors.append(_tensor("boosting_columns", columns_R_C, np.float32))
    return nodes, tensors


def _tree_ensemble(prefix: str, z: str, out: str, counts_T: np.ndarray, leaf_M: np.ndarray, left_M: np.ndarray,
                   right_M: np.ndarray, feature_M: np.ndarray, threshold_M: np.ndarray, missing_left_M: np.ndarray,
                   *, leaf_values_M_R: np.ndarray, base_R: np.ndarray) -> Piece:
    """``out`` (float32 ``(N, R)``): ``base_R`` plus the leaf values ``leaf_values_M_R`` every tree's
    leaf adds; trees given as concatenated node arrays with
    children numbered within each tree, ``x <= threshold`` going left and NaN where
    ``missing_left`` says."""
    tree_M = np.repeat(np.arange(len(counts_T)), counts_T)
    node_M = np.arange(len(leaf_M)) - np.repeat(np.cumsum(counts_T) - counts_T, counts_T)
    leaf_rows, target_rows = np.nonzero(leaf_values_M_R * leaf_M[:, None])  # leaves' non-zero values
    ensemble = helper.make_node(
        "TreeEnsembleRegressor", [f"{prefix}_float64"], [out], domain="ai.onnx.ml",
        n_targets=leaf_values_M_R.shape[1], aggregate_function="SUM", post_transform="NONE",
        nodes_treeids=tree_M.tolist(), nodes_nodeids=node_M.tolist(),
        nodes_modes=np.where(leaf_M, "LEAF", "BRANCH_LEQ").tolist(),
        nodes_featureids=np.where(leaf_M, 0, feature_M).tolist(),
        nodes_values_as_tensor=_tensor("", np.where(leaf_M, 0.0, threshold_M), np.float64),
        nodes_truenodeids=np.where(leaf_M, 0, left_M).tolist(),
        nodes_falsenodeids=np.where(leaf_M, 0, right_M).tolist(),
        nodes_missing_value_tracks_true=np.where(leaf_M, 0, missing_left_M).astype(np.int64).tolist(),
        target_treeids=tree_M[leaf_rows].tolist(), target_nodeids=node_M[leaf_rows].tolist(),
        target_ids=target_rows.tolist(),
        target_weights_as_tensor=_tensor("", leaf_values_M_R[leaf_rows, target_rows], np.float64),
        base_values_as_tensor=_tensor("", base_R, np.float64),
    )
    # Float64 features: a float32 threshold would round and send values next to it the other way.
    return [helper.make_node("Cast", [z], [f"{prefix}_float64"], to=TensorProto.DOUBLE), ensemble], []


def _cnn(classifier: Classifier, z: str, out: str) -> Piece:
    """The network (dropout off) exported by ``torch.onnx``, its names prefixed ``cnn/``."""
    import torch

    network = classifier.network

    class _Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, z_n_D: torch.Tensor) -> torch.Tensor:
            patches = z_n_D.reshape(-1, classifier.channels, classifier.side_px, classifier.side_px)
            kept = [torch.ones(1, network.hidden.in_features), torch.ones(1, network.hidden.out_features)]
            return torch.softmax(self.network.head(self.network.pooled(patches), kept), dim=1)

    buffer = io.BytesIO()
    example = torch.zeros(2, classifier.channels * classifier.side_px**2)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice is not the user's
        warnings.simplefilter("ignore")
        torch.onnx.export(_Probabilities().eval(), (example,), buffer, input_names=["z"], output_names=["p"],
                          dynamic_axes={"z": {0: "N"}, "p": {0: "N"}}, opset_version=OPSETS[""], dynamo=False)
    graph = onnx.compose.add_prefix(onnx.load_from_string(buffer.getvalue()), "cnn/").graph
    renamed = {"cnn/z": z, "cnn/p": out}
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    return list(graph.node), list(graph.initializer)


#: ONNX builders by registered model name: ``(classifier, input name, output name) -> Piece`` reading
#: standardised float32 features ``(N, D)`` and writing float32 class probabilities ``(N, C)``.
EXPORTERS: dict[str, Callable[[Classifier, str, str], Piece]] = {
    "linear": _linear, "random_forest": _forest, "boosting": _boosting, "mlp": _mlp, "cnn": _cnn,
}
