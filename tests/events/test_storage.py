"""Cloud Storage finalize events: what Eventarc sends, what the local cloud builds, and bad data."""
from datetime import datetime, timezone

import pytest

from events.errors import InvalidEvent
from events.storage import (
    FINALIZED_EVENT_TYPE,
    StorageObject,
    finalized_event_attributes,
    parse_finalized_event,
    storage_object_resource,
)

# The shape of a real finalize event's data (JSON API object resource, int64 fields as strings).
EVENTARC_DATA = {
    "bucket": "some-bucket",
    "contentType": "text/plain",
    "crc32c": "rTVTeQ==",
    "etag": "CNHZkbuF/ugCEAE=",
    "generation": "1587627537231057",
    "id": "some-bucket/folder/Test.cs/1587627537231057",
    "kind": "storage#object",
    "md5Hash": "kF8MuJ5+CTJxvyhHS1xzRg==",
    "mediaLink": "https://www.googleapis.com/download/storage/v1/b/some-bucket/o/folder%2FTest.cs?generation=1587627537231057&alt=media",
    "metageneration": "1",
    "name": "folder/Test.cs",
    "selfLink": "https://www.googleapis.com/storage/v1/b/some-bucket/o/folder/Test.cs",
    "size": "352",
    "storageClass": "MULTI_REGIONAL",
    "timeCreated": "2020-04-23T07:38:57.230Z",
    "timeStorageClassUpdated": "2020-04-23T07:38:57.230Z",
    "updated": "2020-04-23T07:38:57.230Z",
}
EVENTARC_ATTRIBUTES = {
    "specversion": "1.0",
    "type": "google.cloud.storage.object.v1.finalized",
    "source": "//storage.googleapis.com/projects/_/buckets/some-bucket",
    "subject": "objects/folder/Test.cs",
    "id": "aaaaaa-1111-bbbb-2222-cccccccccccc",
    "time": "2020-09-29T11:32:00.000Z",
    "datacontenttype": "application/json",
}
CREATED = datetime(2026, 11, 27, 4, 52, 19, 123456, tzinfo=timezone.utc)


def test_parses_the_event_eventarc_delivers():
    stored = parse_finalized_event(EVENTARC_ATTRIBUTES, EVENTARC_DATA)
    assert stored == StorageObject(
        bucket="some-bucket", name="folder/Test.cs", generation=1587627537231057, metageneration=1,
        size=352, content_type="text/plain", md5_hash="kF8MuJ5+CTJxvyhHS1xzRg==", crc32c="rTVTeQ==",
        time_created="2020-04-23T07:38:57.230Z", updated="2020-04-23T07:38:57.230Z",
        storage_class="MULTI_REGIONAL",
    )
    assert stored.uri == "gs://some-bucket/folder/Test.cs"


def test_numbers_sent_as_json_numbers_are_accepted_too():
    data = {**EVENTARC_DATA, "generation": 96883251, "size": 0, "metageneration": 1}
    stored = StorageObject.from_resource(data)
    assert (stored.generation, stored.size, stored.metageneration) == (96883251, 0, 1)


def test_the_local_resource_has_the_cloud_shape_and_round_trips():
    resource = storage_object_resource(
        "pipeline-bkt", "runs/x/preprocess/_MANIFEST.json", 1764219139123456, 2048,
        "1B2M2Y8AsgTpgAmY7PhCfg==", "AAAAAA==", CREATED, content_type="application/json",
    )
    assert set(EVENTARC_DATA) - set(resource) == {"etag"}
    assert resource["generation"] == "1764219139123456" and resource["size"] == "2048"
    assert resource["metageneration"] == "1"
    assert resource["timeCreated"] == "2026-11-27T04:52:19.123Z"
    assert resource["id"] == "pipeline-bkt/runs/x/preprocess/_MANIFEST.json/1764219139123456"
    assert resource["selfLink"].endswith("/b/pipeline-bkt/o/runs%2Fx%2Fpreprocess%2F_MANIFEST.json")
    assert "generation=1764219139123456&alt=media" in resource["mediaLink"]
    stored = parse_finalized_event(
        finalized_event_attributes("pipeline-bkt", resource["name"], "e-1", CREATED), resource
    )
    assert stored.generation == 1764219139123456 and stored.size == 2048
    assert stored.content_type == "application/json" and stored.crc32c == "AAAAAA=="


def test_event_attributes_name_bucket_and_object():
    attributes = finalized_event_attributes("b", "triggers/go.json", "123", CREATED)
    assert attributes == {
        "specversion": "1.0",
        "type": FINALIZED_EVENT_TYPE,
        "source": "//storage.googleapis.com/projects/_/buckets/b",
        "subject": "objects/triggers/go.json",
        "id": "123",
        "time": "2026-11-27T04:52:19.123456Z",
        "datacontenttype": "application/json",
    }


@pytest.mark.parametrize(
    "change, words",
    [
        ({"generation": None}, "'generation' is missing"),
        ({"generation": "12a"}, "decimal integer"),
        ({"generation": True}, "bool"),
        ({"size": "-5"}, "decimal integer"),
        ({"name": ""}, "'name' must be a non-empty string"),
        ({"bucket": 7}, "'bucket' must be a non-empty string"),
        ({"contentType": ["x"]}, "'contentType' must be a string"),
    ],
)
def test_malformed_object_data_is_refused_with_the_field_named(change, words):
    data = {**EVENTARC_DATA, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(InvalidEvent, match=words):
        StorageObject.from_resource(data)


@pytest.mark.parametrize("data", [None, [], "text", 5])
def test_data_that_is_not_an_object_is_refused(data):
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        StorageObject.from_resource(data)


def test_wrong_event_type_or_mismatched_source_is_refused():
    with pytest.raises(InvalidEvent, match="expected a google.cloud.storage.object.v1.finalized"):
        parse_finalized_event({**EVENTARC_ATTRIBUTES, "type": "google.cloud.storage.object.v1.deleted"},
                              EVENTARC_DATA)
    with pytest.raises(InvalidEvent, match="does not name bucket"):
        parse_finalized_event({**EVENTARC_ATTRIBUTES, "source": "//storage.googleapis.com/projects/_/buckets/other"},
                              EVENTARC_DATA)


def test_builders_refuse_impossible_objects():
    with pytest.raises(ValueError, match="generation"):
        storage_object_resource("b", "n", 0, 1, None, None, CREATED)
    with pytest.raises(ValueError, match="size"):
        storage_object_resource("b", "n", 1, -1, None, None, CREATED)
    with pytest.raises(ValueError, match="naive"):
        storage_object_resource("b", "n", 1, 1, None, None, datetime(2026, 1, 1))
