"""The broker behind a gRPC `google.pubsub.v1.Publisher`, so the real client library can publish to it.

`google.cloud.pubsub_v1.PublisherClient` talks plain gRPC to whatever PUBSUB_EMULATOR_HOST names
(host:port, no TLS, no credentials). Serving CreateTopic, GetTopic and Publish here lets code that
publishes with the real client (the chain's `mlrelay publish`, Cloud Scheduler's stand-in, tests)
reach the local broker unchanged. Requests and responses are (de)serialised with the client's own
proto-plus types, and errors carry the status codes Pub/Sub returns (NOT_FOUND for an unknown topic,
ALREADY_EXISTS on creating an existing one, INVALID_ARGUMENT for a malformed message).
"""
from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.pubsub_v1 import types

from local_cloud.pubsub.broker import Broker, ResourceNotFound
from local_cloud.pubsub.messages import validate_message, validate_resource_name

log = logging.getLogger(__name__)

SERVICE = "google.pubsub.v1.Publisher"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_TOPIC_PATH = re.compile(r"^projects/([^/]+)/topics/([^/]+)$")


def parse_topic_path(path: str) -> tuple[str, str]:
    """(project, topic) from `projects/P/topics/T`; ValueError naming the expected form otherwise."""
    match = _TOPIC_PATH.match(path or "")
    if not match:
        raise ValueError(f"topic must look like projects/PROJECT/topics/TOPIC, got {path!r}")
    return match.group(1), match.group(2)


class _PublisherService:
    """The three Publisher methods the client needs, answering for one broker's project."""

    def __init__(self, broker: Broker):
        self.broker = broker

    def _local_topic(self, path: str, context: grpc.ServicerContext) -> str:
        try:
            project, topic = parse_topic_path(path)
            validate_resource_name("topic", topic)
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if project != self.broker.project:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={topic}).")
        return topic

    def create_topic(self, request: types.Topic, context: grpc.ServicerContext) -> types.Topic:
        topic = self._local_topic(request.name, context)
        if self.broker.has_topic(topic):
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
        self.broker.create_topic(topic)
        return types.Topic(name=request.name)

    def get_topic(self, request: types.GetTopicRequest, context: grpc.ServicerContext) -> types.Topic:
        topic = self._local_topic(request.topic, context)
        if not self.broker.has_topic(topic):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={topic}).")
        return types.Topic(name=request.topic)

    def publish(self, request: types.PublishRequest, context: grpc.ServicerContext) -> types.PublishResponse:
        topic = self._local_topic(request.topic, context)
        if not request.messages:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "The request contains no messages.")
        batch = []
        for index, message in enumerate(request.messages):
            try:
                attributes = validate_message(bytes(message.data), dict(message.attributes))
            except ValueError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"message {index}: {err}")
            batch.append((bytes(message.data), attributes, message.ordering_key or None))
        try:
            ids = [self.broker.publish(topic, data, attrs, ordering_key=key) for data, attrs, key in batch]
        except ResourceNotFound:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={topic}).")
        except RuntimeError as err:  # the broker is stopping
            context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        return types.PublishResponse(message_ids=ids)


def _unary(handler, request_type, response_type) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_type.deserialize,
        response_serializer=response_type.serialize,
    )


def serve_publisher(broker: Broker, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.Server, int]:
    """Start a gRPC Publisher for `broker` on a loopback address; returns the server and its port.

    Port 0 picks a free port. Point clients at it with PUBSUB_EMULATOR_HOST=127.0.0.1:PORT and stop
    it with `server.stop(grace)`.
    """
    if host not in _LOOPBACK_HOSTS:
        raise ValueError(f"the local Pub/Sub serves loopback only ({', '.join(_LOOPBACK_HOSTS)}), got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535, got {port!r}")
    service = _PublisherService(broker)
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "CreateTopic": _unary(service.create_topic, types.Topic, types.Topic),
        "GetTopic": _unary(service.get_topic, types.GetTopicRequest, types.Topic),
        "Publish": _unary(service.publish, types.PublishRequest, types.PublishResponse),
    })
    server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="pubsub-grpc"))
    server.add_generic_rpc_handlers((handler,))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as err:
        raise OSError(f"cannot listen on {address}: {err}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}: the port is in use or not allowed")
    server.start()
    log.info("Pub/Sub publisher API for project %s on %s:%d", broker.project, host, bound)
    return server, bound
