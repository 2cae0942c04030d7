"""The entries the local cloud writes are the entries the functions parse: each corpus entry
(built with local_cloud.logging.entries) survives the trip through a sink message unchanged."""
import json

from events.log_entries import LogEntry, parse_log_entry
from tests.fakes.log_corpus import FOREIGN, ORDINARY, TERMINAL, WHEN


def test_corpus_entries_survive_the_trip_through_a_sink_message():
    for name, entry, *_ in TERMINAL + ORDINARY + FOREIGN:
        parsed = parse_log_entry(json.dumps(entry).encode("utf-8"))
        assert isinstance(parsed, LogEntry) and parsed.raw == entry, name
        assert parsed.timestamp == WHEN, name
