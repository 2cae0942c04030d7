"""`mlrelay console`: the runs of a pipeline bucket, their reports and the endpoint's history, in a browser."""
from mlrelay.console.app import DEFAULT_PORT, Console, check_host, create_app, is_loopback, serve

__all__ = ["DEFAULT_PORT", "Console", "check_host", "create_app", "is_loopback", "serve"]
