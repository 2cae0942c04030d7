"""mlrelay's serving container: a SavedModel served under Vertex AI's custom-container contract.

Vertex AI runs the image (deploy/serving_image) on each node of a deployed model and tells it,
in environment variables, where to listen (AIP_HTTP_PORT), which paths answer health checks
(AIP_HEALTH_ROUTE) and predictions (AIP_PREDICT_ROUTE), and where the model's artifacts are
(AIP_STORAGE_URI): https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements.
Predictions take and give Vertex's predict JSON ({"instances": [...]} -> {"predictions": [...]})
in TensorFlow Serving's row format, as the prebuilt TensorFlow image did.

It ships on its own, so it imports no other mlrelay package; the local Vertex AI
(local_cloud.vertex) imports its row format, SavedModel loading, batching and request checks,
so one copy of that code serves in the cloud and locally.

Modules: ``errors`` (Google's error JSON), ``bodies`` (request bodies read and checked),
``row_format`` (instances and predictions), ``model_loading`` (the SavedModel in a Session),
``batcher`` (requests that arrive together as one model call), ``artifacts`` (AIP_STORAGE_URI to a
local directory), ``app`` (the ASGI application); ``python -m model_server`` serves it.
"""
