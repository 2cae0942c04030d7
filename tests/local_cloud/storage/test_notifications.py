"""What a finalized object publishes: Eventarc's event attributes and the bucket's notification."""
from __future__ import annotations

from local_cloud.storage.bucket import FinalizedObject
from local_cloud.storage.notifications import eventarc_event_attributes, notification_attributes

RESOURCE = {"bucket": "b", "name": "triggers/go.json", "generation": "1700000000000001"}
TRIGGER = FinalizedObject("b", "triggers/go.json", RESOURCE, "2026-11-27T05:00:00.000001Z")


def test_the_eventarc_event_names_the_object_and_keeps_one_id_per_generation():
    attributes = eventarc_event_attributes(TRIGGER)
    assert attributes["ce-subject"] == "objects/triggers/go.json"
    assert attributes["ce-time"] == TRIGGER.event_time
    assert attributes == eventarc_event_attributes(TRIGGER)
    newer = FinalizedObject("b", TRIGGER.name, {**RESOURCE, "generation": "1700000000000002"}, TRIGGER.event_time)
    assert eventarc_event_attributes(newer)["ce-id"] != attributes["ce-id"]


def test_the_notification_reports_objects_under_its_prefix_only():
    attributes = notification_attributes(TRIGGER, "triggers/")
    assert attributes["eventType"] == "OBJECT_FINALIZE" and attributes["payloadFormat"] == "JSON_API_V1"
    assert (attributes["bucketId"], attributes["objectId"]) == ("b", "triggers/go.json")
    assert attributes["objectGeneration"] == "1700000000000001"
    data = FinalizedObject("b", "data/x.csv", {**RESOURCE, "name": "data/x.csv"}, TRIGGER.event_time)
    assert notification_attributes(data, "triggers/") is None
