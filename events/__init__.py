"""The event contract of mlrelay, pure and free of I/O.

Typed parsing and building of what the chain's services exchange: CloudEvents data for Cloud
Storage and Pub/Sub (`storage`, `pubsub`), run requests (`run_request`), run ids (`run_id`), run
ledger records (`ledger`), the preprocessing manifest (`manifest`), Cloud Logging entries and the
log-sink filters (`log_entries`, `sink_filters`). Where these live in the bucket is the run
store's (`functions.run_store`). Modules import only the standard library and, when a request is
validated, jsonschema, so Cloud Functions that import them start fast.
"""
