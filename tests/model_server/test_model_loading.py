"""SavedModels loaded in a Session, as TensorFlow Serving loads them."""

from __future__ import annotations

import pytest

from model_server.model_loading import _session_callable, load_saved_model
from model_server.row_format import instances_to_columns
from tests.local_cloud.vertex.conftest import BABY, TWIN_GIRL, weight_v1


def test_the_public_session_callable_serves_the_same_predictions(saved_models):
    import tensorflow as tf

    model = load_saved_model(saved_models["v1"], lambda uri: uri)
    columns = instances_to_columns([BABY, TWIN_GIRL], model.input_specs)

    class PublicSessionOnly:  # a TensorFlow without Session._make_callable_from_options
        def __init__(self, session):
            self.make_callable = session.make_callable

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_models["v1"])
        signature = meta_graph.signature_def["serving_default"]
        names = [spec.name for spec in model.input_specs]
        run = _session_callable(PublicSessionOnly(session), feeds=[signature.inputs[n].name for n in names],
                                fetches=[signature.outputs["weight"].name])
        (weights,) = run(*(columns[n] for n in names))
    assert weights.tolist() == pytest.approx([weight_v1(BABY), weight_v1(TWIN_GIRL)], rel=1e-6)
    assert model.predict(columns)["weight"].tolist() == pytest.approx(weights.tolist(), rel=1e-7)
