"""The event contract of mlrelay, pure and free of I/O.

Typed parsing and building of what the chain's services exchange: CloudEvents data for Cloud
Storage and Pub/Sub (`storage`, `pubsub`), run requests (`run_request`), run ids (`run_id`), run
ledger records (`ledger`), Cloud Logging entries and the log-sink filters (`log_entries`,
`log_filter`, `sink_filters`). Modules import only the standard library and, when a request is
validated, jsonschema, so Cloud Functions that import them start fast.
"""
