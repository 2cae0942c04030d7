"""The one exception type for malformed events, so callers can tell bad input from a fault.

A function that receives an event it cannot parse must acknowledge it (and record why) rather than
let the platform redeliver it forever; a transient fault must raise anything else so it is retried.
Catching `InvalidEvent` (a `ValueError`) is how an entry point tells the two apart.
"""
from __future__ import annotations


class InvalidEvent(ValueError):
    """An event, message or record that does not have the documented shape; the text says why."""
