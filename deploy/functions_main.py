"""The deployed functions' main.py: Cloud Functions loads entry points from the source root.

deploy.sh copies this file to the root of the functions' source, beside functions/ and events/,
and names one of these entry points in each `gcloud functions deploy --entry-point`.
"""
from functions.main import (on_preprocess_output, on_release_event, on_training_complete, reconcile_runs,
                            start_pipeline)

__all__ = ["start_pipeline", "on_preprocess_output", "on_training_complete", "on_release_event", "reconcile_runs"]
