"""mlrelay: an event-driven, serverless MLOps chain on Google Cloud, and its command line."""
