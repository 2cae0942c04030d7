"""What the release policy decides, as pure functions: no I/O, no clock, no TensorFlow.

- `gate.decide_gate`: may a trained candidate be deployed (comparison.json against thresholds)?
- `data_check.check_data`: do this run's preprocessing counts look like the last good run's?
- `bake.judge_bake`: after the bake, is the canary promoted or rolled back?
- `policy.ReleasePolicy`: every threshold, with a run request's overrides applied.

Each decision carries a one-line reason and its checks as JSON-ready records, which the stages
write to the run ledger as they are.
"""
