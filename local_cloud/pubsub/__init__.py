"""Pub/Sub and Eventarc, locally: topics, push and pull subscriptions, retries and dead letters in one process.

`broker` (topics, subscriptions, delivery, retries, dead letter, pull leases), `store` (the broker's
state in SQLite, so that it survives a crash), `messages` (what Pub/Sub accepts), `retry_policy`
(backoff and dead-letter attributes), `eventarc` (the CloudEvent and push bodies a subscription
POSTs), `delivery` (push and in-process targets, delivery records) and `grpc_front` (the Publisher
and Subscriber APIs the real client library talks to through PUBSUB_EMULATOR_HOST).
"""
