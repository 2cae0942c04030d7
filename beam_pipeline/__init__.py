"""mlrelay's preprocessing: natality rows -> train/eval CSV shards + ``_MANIFEST.json``.

One Beam pipeline reads BigQuery or Parquet/CSV files, keeps the valid rows, optionally
keeps a deterministic ``--limit`` of them, splits by year-month hash (BigQuery's
FARM_FINGERPRINT) and writes two CSV rows per record; the manifest is written last.

Modules: ``records`` (the record-level rules, pure functions over Arrow tables),
``sources`` (reading), ``transforms`` (composite PTransforms), ``pipeline`` (the graph),
``manifest``, ``options`` (configuration and Beam/Dataflow options) and ``run`` (entry
points: ``python -m beam_pipeline.run``, ``main(argv)``, ``run_pipeline(config)``).

Local runs use Beam's FnApiRunner (the DirectRunner's batch engine). By default
(``--direct-running-mode auto``) inputs under 4M rows run in one in-process worker and
larger ones in one worker process per core: measured on 2 cores, starting worker
processes costs more than it saves below that size (see ``options.PARALLEL_FROM_ROWS``).

Nothing is imported here, so ``import beam_pipeline.records`` does not load Beam.
"""
