"""What each stage of the chain decides and does, apart from how its event arrived.

Each stage takes a decoded trigger (functions.triggers) and the platform, acts, records what it
did in the run ledger and returns a `StageResult`. Rules from the design, kept here:
- a function starts work and returns; it never waits on a job;
- every stage is idempotent: a redelivered or duplicated event finds its work done (a create-only
  launch marker, deterministic job names, a job lookup by run label) and does nothing twice;
- bad input is rejected with a reason in the ledger and acknowledged; transient faults raise.

One module per stage: `start` (start_pipeline), `training` (on_preprocess_output, and the
training job's end), `deploy` (registering and deploying a trained model, and the deploy's end),
`preprocess` (a preprocessing job's failure).
"""
