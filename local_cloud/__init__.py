"""A local stand-in for the Google Cloud services the chain uses, speaking their real formats.

One subpackage per service: `storage` (Cloud Storage), `pubsub` (Pub/Sub and Eventarc), `logging`
(Cloud Logging), `jobs` (Dataflow and Vertex AI training), `vertex` (Vertex AI Model Registry and
Endpoints); `scheduler` (Cloud Scheduler); `cloud` wires them together as the cloud does.
"""
