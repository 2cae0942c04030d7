"""Local Vertex AI Model Registry and Endpoints, speaking Vertex AI's REST JSON (v1).

The chain's last stage registers a trained SavedModel as a new version of a named model and
deploys it to an endpoint without waiting for the deployment. In the cloud that is Vertex AI;
on one machine it is this service, served on 127.0.0.1 with the same paths, request bodies,
long-running Operations and predict JSON, so the function's local adapter is a thin HTTP
client and everything it sends or reads is in the cloud's format.

What it models:
  * a registry: models with versions "1", "2", ...; the alias "default" names the newest;
  * endpoints holding deployed models and a traffic split ("0" in a request's split means the
    model that request deploys);
  * asynchronous deploys: ``deployModel`` answers with an unfinished Operation, a background
    thread starts the Model's serving container as its own process (its command, Vertex's
    AIP_* variables) and health-checks it, then applies the split, ends the Operation and
    reports it to ``on_operation_done`` (the local cloud turns that into the audit-log entry
    that ends the deploy). A container that never becomes ready ends the Operation with an
    ``error``; the endpoint keeps serving what it served;
  * predictions routed by the traffic split to the chosen deployed model's container, which
    is the serving image's entry point (``python -m model_server``): the code that serves in
    the cloud serves here;
  * errors as Google APIs return them: ``{"error": {"code", "message", "status"}}``.

State (models, endpoints, operations, deploys still in progress) is a JSON file under
``state_dir``, replaced atomically on every change, so a restart keeps every version and what
is deployed, starts the deployed models' containers again and finishes deploys that were in
progress. TensorFlow runs only in the containers, so starting the service is fast.

Modules: ``rest_rules`` (pure REST decisions), ``serving_processes`` (a deployed model's
container), ``forwarding`` (the hop to it), ``state`` and ``operations`` (what is kept and the long-running Operations), ``resources``
and ``routing`` (what reads render and predictions see), ``registry`` (ModelService), ``http``
(the REST front); ``python -m local_cloud.vertex`` runs it on its own.
"""
