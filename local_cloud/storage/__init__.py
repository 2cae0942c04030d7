"""Cloud Storage, locally: a bucket is a directory; finalize events come from inotify.

`bucket` (the directory and its object-finalize events) and `notifications` (what a finalized
object publishes: the bucket's Pub/Sub notification and the event Eventarc's storage trigger gets).
"""
