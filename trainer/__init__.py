"""The babyweight trainer that Vertex AI runs (``python -m trainer.task``).

It reads the CSV shards and ``_MANIFEST.json`` that preprocessing writes, trains the
wide & deep regression model in Keras 3, exports a TensorFlow SavedModel that Vertex AI's
prebuilt TensorFlow prediction container can serve, scores it (and, given
``--champion-model-dir``, the champion) per slice into ``comparison.json``, writes what a
person would plot into ``training_report.json``, and ``metrics.json`` last; while it trains it
keeps ``progress.json`` current.
Modules: ``schema`` (the columns and vocabularies), ``paths`` (Vertex's locations),
``inputs`` (which shards to read), ``data`` (tf.data input), ``model`` (the network and its
export), ``evaluation`` (the figures in metrics.json), ``comparison`` (the figures in
comparison.json), ``report`` (progress.json and training_report.json), ``monitoring`` (the
Keras callbacks: progress, TensorBoard), ``task`` (the entry point), ``serving_check`` (loads an
export with plain TensorFlow and predicts; also scores the champion) and ``contract_data`` (small
datasets in the preprocess contract, for checks and tests).
"""
