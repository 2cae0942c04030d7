"""Cloud Logging, locally: LogEntries as the cloud writes them, kept and routed by sink filters.

`entries` (LogEntry builders for the jobs' lines and the deploy's audit entry), `query` (the
Logging query language the sink filters are written in) and `router` (the log router and its
sinks to Pub/Sub).
"""
