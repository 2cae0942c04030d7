"""The broker behind gRPC `google.pubsub.v1.Publisher` and `Subscriber`, so the real client library can use it.

`google.cloud.pubsub_v1.PublisherClient` and `SubscriberClient` talk plain gRPC to whatever
PUBSUB_EMULATOR_HOST names (host:port, no TLS, no credentials). Serving CreateTopic, GetTopic and
Publish, and for pull subscriptions GetSubscription, Pull, Acknowledge and ModifyAckDeadline, lets
code written against the real client (`mlrelay publish`, `mlrelay dead-letters`, Cloud Scheduler's
stand-in, tests) reach the local broker unchanged. Requests and responses are (de)serialised with
the client's own proto-plus types, and errors carry the status codes Pub/Sub returns (NOT_FOUND for
an unknown topic or subscription, ALREADY_EXISTS on creating an existing topic, INVALID_ARGUMENT
for a malformed message or ack id, FAILED_PRECONDITION for pulling from a push subscription).
A Pull answers at once, with what is there (possibly nothing), where the service may wait a while.
"""
from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1 import types

from local_cloud.pubsub.broker import Broker, BrokerStopped, NotAPullSubscription, ResourceNotFound
from local_cloud.pubsub.messages import validate_message, validate_resource_name

log = logging.getLogger(__name__)

SERVICE = "google.pubsub.v1.Publisher"
SUBSCRIBER_SERVICE = "google.pubsub.v1.Subscriber"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_TOPIC_PATH = re.compile(r"^projects/([^/]+)/topics/([^/]+)$")
_SUBSCRIPTION_PATH = re.compile(r"^projects/([^/]+)/subscriptions/([^/]+)$")
# The most messages one Pull returns, as the service caps max_messages.
MAX_PULL_MESSAGES = 1000


def parse_topic_path(path: str) -> tuple[str, str]:
    """(project, topic) from `projects/P/topics/T`; ValueError naming the expected form otherwise."""
    match = _TOPIC_PATH.match(path or "")
    if not match:
        raise ValueError(f"topic must look like projects/PROJECT/topics/TOPIC, got {path!r}")
    return match.group(1), match.group(2)


def parse_subscription_path(path: str) -> tuple[str, str]:
    """(project, subscription) from `projects/P/subscriptions/S`; ValueError naming the expected form otherwise."""
    match = _SUBSCRIPTION_PATH.match(path or "")
    if not match:
        raise ValueError(f"subscription must look like projects/PROJECT/subscriptions/SUBSCRIPTION, got {path!r}")
    return match.group(1), match.group(2)


def local_name(broker: Broker, kind: str, parse, path: str, context: grpc.ServicerContext) -> str:
    """The topic or subscription a resource path names in the broker's project; the call is
    aborted INVALID_ARGUMENT for a malformed path and NOT_FOUND for another project's, as Pub/Sub does."""
    try:
        project, name = parse(path)
        validate_resource_name(kind, name)
    except ValueError as err:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
    if project != broker.project:
        context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={name}).")
    return name


class _PublisherService:
    """The three Publisher methods the client needs, answering for one broker's project."""

    def __init__(self, broker: Broker):
        self.broker = broker

    def _local_topic(self, path: str, context: grpc.ServicerContext) -> str:
        return local_name(self.broker, "topic", parse_topic_path, path, context)

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


class _SubscriberService:
    """The Subscriber methods a client needs to pull and acknowledge, answering for one broker's project."""

    def __init__(self, broker: Broker):
        self.broker = broker

    def _local_subscription(self, path: str, context: grpc.ServicerContext) -> str:
        return local_name(self.broker, "subscription", parse_subscription_path, path, context)

    def _call(self, name: str, context: grpc.ServicerContext, method, *args):
        """`method(name, *args)` on the broker, its errors answered with the status codes Pub/Sub uses."""
        try:
            return method(name, *args)
        except ResourceNotFound:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={name}).")
        except BrokerStopped as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        except NotAPullSubscription as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

    def get_subscription(self, request: types.GetSubscriptionRequest,
                         context: grpc.ServicerContext) -> types.Subscription:
        name = self._local_subscription(request.subscription, context)
        info = self._call(name, context, self.broker.subscription)
        subscription = types.Subscription(
            name=request.subscription,
            topic=f"projects/{self.broker.project}/topics/{info.topic}",
            ack_deadline_seconds=int(info.ack_deadline_s),
        )
        if info.endpoint_url:
            subscription.push_config = types.PushConfig(push_endpoint=info.endpoint_url)
        if info.dead_letter_topic:
            subscription.dead_letter_policy = types.DeadLetterPolicy(
                dead_letter_topic=f"projects/{self.broker.project}/topics/{info.dead_letter_topic}",
                max_delivery_attempts=info.max_delivery_attempts,
            )
        if info.retry:
            subscription.retry_policy = types.RetryPolicy(
                minimum_backoff=timedelta(seconds=info.min_backoff_s),
                maximum_backoff=timedelta(seconds=info.max_backoff_s),
            )
        return subscription

    def pull(self, request: types.PullRequest, context: grpc.ServicerContext) -> types.PullResponse:
        name = self._local_subscription(request.subscription, context)
        if request.max_messages <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_messages must be greater than 0.")
        pulled = self._call(name, context, self.broker.pull, min(request.max_messages, MAX_PULL_MESSAGES))
        return types.PullResponse(received_messages=[
            types.ReceivedMessage(
                ack_id=item.ack_id,
                delivery_attempt=item.delivery_attempt,
                message=types.PubsubMessage(
                    data=item.message.data,
                    attributes=dict(item.message.attributes),
                    message_id=item.message.message_id,
                    publish_time=item.message.publish_time,
                    ordering_key=item.message.ordering_key or "",
                ),
            )
            for item in pulled
        ])

    def acknowledge(self, request: types.AcknowledgeRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        name = self._local_subscription(request.subscription, context)
        self._call(name, context, self.broker.acknowledge, list(request.ack_ids))
        return empty_pb2.Empty()

    def modify_ack_deadline(self, request: types.ModifyAckDeadlineRequest,
                            context: grpc.ServicerContext) -> empty_pb2.Empty:
        name = self._local_subscription(request.subscription, context)
        self._call(name, context, self.broker.modify_ack_deadline, list(request.ack_ids),
                   request.ack_deadline_seconds)
        return empty_pb2.Empty()


def _unary(handler, request_type, response_type) -> grpc.RpcMethodHandler:
    serialize = getattr(response_type, "serialize", None) or response_type.SerializeToString
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_type.deserialize,
        response_serializer=serialize,
    )


def serve_publisher(broker: Broker, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.Server, int]:
    """Start a gRPC Publisher and Subscriber for `broker` on a loopback address; returns the server and its port.

    Port 0 picks a free port. Point clients at it with PUBSUB_EMULATOR_HOST=127.0.0.1:PORT and stop
    it with `server.stop(grace)`.
    """
    if host not in _LOOPBACK_HOSTS:
        raise ValueError(f"the local Pub/Sub serves loopback only ({', '.join(_LOOPBACK_HOSTS)}), got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535, got {port!r}")
    service = _PublisherService(broker)
    publisher = grpc.method_handlers_generic_handler(SERVICE, {
        "CreateTopic": _unary(service.create_topic, types.Topic, types.Topic),
        "GetTopic": _unary(service.get_topic, types.GetTopicRequest, types.Topic),
        "Publish": _unary(service.publish, types.PublishRequest, types.PublishResponse),
    })
    pulls = _SubscriberService(broker)
    subscriber = grpc.method_handlers_generic_handler(SUBSCRIBER_SERVICE, {
        "GetSubscription": _unary(pulls.get_subscription, types.GetSubscriptionRequest, types.Subscription),
        "Pull": _unary(pulls.pull, types.PullRequest, types.PullResponse),
        "Acknowledge": _unary(pulls.acknowledge, types.AcknowledgeRequest, empty_pb2.Empty),
        "ModifyAckDeadline": _unary(pulls.modify_ack_deadline, types.ModifyAckDeadlineRequest, empty_pb2.Empty),
    })
    server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="pubsub-grpc"))
    server.add_generic_rpc_handlers((publisher, subscriber))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as err:
        raise OSError(f"cannot listen on {address}: {err}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}: the port is in use or not allowed")
    server.start()
    log.info("Pub/Sub publisher and subscriber API for project %s on %s:%d", broker.project, host, bound)
    return server, bound
