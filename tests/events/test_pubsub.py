"""Pub/Sub deliveries (Eventarc data and push bodies) and Cloud Storage notification attributes."""
import base64
import json
from datetime import datetime, timezone

import pytest

from events.errors import InvalidEvent
from events.pubsub import (
    MESSAGE_PUBLISHED_EVENT_TYPE,
    GcsNotification,
    PubsubMessage,
    gcs_notification_attributes,
    is_gcs_notification,
    message_published_attributes,
    message_published_data,
    parse_message_published,
    parse_push_envelope,
    push_envelope,
    topic_from_source,
)

WHEN = datetime(2026, 11, 27, 4, 52, 19, 123456, tzinfo=timezone.utc)

# messagePublished data as in Google's CloudEvent examples (camelCase only).
EVENTARC_DATA = {
    "subscription": "projects/test-project/subscriptions/my-subscription",
    "message": {
        "attributes": {"attr1": "attr1-value"},
        "data": "dGVzdCBtZXNzYWdlIDM=",
        "messageId": "message-id",
        "publishTime": "2021-02-05T04:06:14.109Z",
        "orderingKey": "ordering-key",
    },
}
# A wrapped push body as Pub/Sub sends it: id and time in both spellings, and deliveryAttempt.
PUSH_BODY = {
    "message": {
        "attributes": {"key": "value"},
        "data": "SGVsbG8gQ2xvdWQgUHViL1N1YiEgSGVyZSBpcyBteSBtZXNzYWdlIQ==",
        "messageId": "2070443601311540",
        "message_id": "2070443601311540",
        "publishTime": "2021-02-26T19:13:55.749Z",
        "publish_time": "2021-02-26T19:13:55.749Z",
    },
    "subscription": "projects/myproject/subscriptions/mysubscription",
    "deliveryAttempt": 1,
}


def test_parses_eventarc_message_published_data():
    delivery = parse_message_published(EVENTARC_DATA)
    assert delivery.subscription == "projects/test-project/subscriptions/my-subscription"
    assert delivery.message.data == b"test message 3"
    assert delivery.message.text() == "test message 3"
    assert delivery.message.attributes == {"attr1": "attr1-value"}
    assert delivery.message.message_id == "message-id"
    assert delivery.message.publish_time == "2021-02-05T04:06:14.109Z"
    assert delivery.message.ordering_key == "ordering-key"
    assert delivery.delivery_attempt is None


def test_push_body_is_the_same_shape_and_parses_from_bytes():
    delivery = parse_push_envelope(json.dumps(PUSH_BODY).encode())
    assert delivery.message.data == b"Hello Cloud Pub/Sub! Here is my message!"
    assert delivery.message.message_id == "2070443601311540"
    assert delivery.delivery_attempt == 1


def test_snake_case_only_fields_are_read():
    message = {"data": "", "message_id": "42", "publish_time": "2021-02-26T19:13:55.749123456Z"}
    delivery = parse_message_published({"message": message, "subscription": "projects/p/subscriptions/s"})
    assert delivery.message.message_id == "42" and delivery.message.data == b""


def test_built_delivery_carries_both_spellings_and_round_trips():
    message = PubsubMessage(b'{"limit": 10}', {"origin": "scheduler"}, "99", "2026-11-27T04:52:19.123456Z")
    body = push_envelope(message, "projects/p/subscriptions/start", delivery_attempt=3)
    assert body is not None and body == message_published_data(message, "projects/p/subscriptions/start", 3)
    sent = body["message"]
    assert sent["messageId"] == sent["message_id"] == "99"
    assert sent["publishTime"] == sent["publish_time"]
    assert base64.b64decode(sent["data"]) == b'{"limit": 10}'
    back = parse_message_published(json.dumps(body))
    assert back.message == message and back.delivery_attempt == 3


def test_cloudevent_attributes_for_a_message():
    attributes = message_published_attributes("proj", "mlrelay-start", "123", WHEN)
    assert attributes == {
        "specversion": "1.0",
        "type": MESSAGE_PUBLISHED_EVENT_TYPE,
        "source": "//pubsub.googleapis.com/projects/proj/topics/mlrelay-start",
        "id": "123",
        "time": "2026-11-27T04:52:19.123456Z",
        "datacontenttype": "application/json",
    }
    assert topic_from_source(attributes["source"]) == "mlrelay-start"
    with pytest.raises(InvalidEvent, match="not a Pub/Sub topic source"):
        topic_from_source("//storage.googleapis.com/projects/_/buckets/b")


@pytest.mark.parametrize(
    "body, words",
    [
        (b"\xff\xfe", "not UTF-8"),
        ("{not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"subscription": "s"}, "has no 'message'"),
        ({"message": "hello"}, "'message' must be a JSON object"),
        ({"message": {"data": "***"}}, "not valid base64"),
        ({"message": {"data": 5}}, "base64 string"),
        ({"message": {"attributes": {"a": 1}}}, "map strings to strings"),
        ({"message": {"publishTime": "yesterday"}}, "publishTime"),
        ({"message": {}, "deliveryAttempt": "1"}, "deliveryAttempt"),
        ("[" * 100000, "not JSON"),
    ],
)
def test_malformed_deliveries_raise_invalid_event(body, words):
    with pytest.raises(InvalidEvent, match=words):
        parse_message_published(body)


def test_message_text_that_is_not_utf8_is_reported():
    with pytest.raises(InvalidEvent, match="not UTF-8"):
        PubsubMessage(b"\xc3\x28").text()


# The attributes a Cloud Storage notification sets on its message.
NOTIFICATION = {
    "notificationConfig": "projects/_/buckets/pipeline-bkt/notificationConfigs/7",
    "eventType": "OBJECT_FINALIZE",
    "payloadFormat": "JSON_API_V1",
    "bucketId": "pipeline-bkt",
    "objectId": "triggers/retrain.json",
    "objectGeneration": "1764219139123456",
    "eventTime": "2026-11-27T04:52:19.123456Z",
}


def test_parses_a_finalize_notification():
    notification = GcsNotification.from_attributes(NOTIFICATION)
    assert notification.is_finalize
    assert notification.bucket == "pipeline-bkt" and notification.object_name == "triggers/retrain.json"
    assert notification.generation == 1764219139123456
    assert notification.overwrote_generation is None
    assert is_gcs_notification(NOTIFICATION) and not is_gcs_notification({"origin": "scheduler"})


def test_overwrite_generations_are_read():
    attributes = {**NOTIFICATION, "overwroteGeneration": "1764219000000000"}
    assert GcsNotification.from_attributes(attributes).overwrote_generation == 1764219000000000
    deleted = {**NOTIFICATION, "eventType": "OBJECT_DELETE", "overwrittenByGeneration": "1764219139123457"}
    parsed = GcsNotification.from_attributes(deleted)
    assert not parsed.is_finalize and parsed.overwritten_by_generation == 1764219139123457


def test_builder_matches_the_cloud_attributes():
    built = gcs_notification_attributes("pipeline-bkt", "triggers/retrain.json", 1764219139123456, WHEN,
                                        notification_id="7")
    assert built == NOTIFICATION
    assert GcsNotification.from_attributes(built).to_attributes() == built


@pytest.mark.parametrize(
    "change, words",
    [
        ({"objectId": None}, "missing objectId"),
        ({"eventType": "OBJECT_EXPLODE"}, "unknown Cloud Storage eventType"),
        ({"payloadFormat": "XML"}, "payloadFormat"),
        ({"objectGeneration": "12x"}, "decimal integer"),
        ({"eventTime": "soon"}, "eventTime"),
        ({"overwroteGeneration": "-1"}, "decimal integer"),
        ({"bucketId": 5}, "missing bucketId"),
    ],
)
def test_bad_notification_attributes_are_named(change, words):
    attributes = {k: v for k, v in {**NOTIFICATION, **change}.items() if v is not None}
    with pytest.raises(InvalidEvent, match=words):
        GcsNotification.from_attributes(attributes)
