"""Dataflow and Vertex AI training, locally: the real pipeline and trainer as child processes.

`runner` (the jobs, their states and their LogEntries) and `control_api` (the Dataflow and Vertex
AI CustomJob REST calls the functions make).
"""
