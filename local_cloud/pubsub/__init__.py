"""Pub/Sub and Eventarc, locally: topics, push subscriptions, retries and dead letters in one process.

`broker` (topics, subscriptions, delivery, retries, dead letter), `messages` (what Pub/Sub
accepts), `retry_policy` (backoff and dead-letter attributes), `eventarc` (the CloudEvent and push
bodies a subscription POSTs), `delivery` (push and in-process targets) and `grpc_front` (the
Publisher API the real client library talks to through PUBSUB_EMULATOR_HOST).
"""
