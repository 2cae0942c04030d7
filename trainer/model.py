"""The babyweight wide & deep network in Keras 3, and its export for Vertex AI prediction.

The original model was written with ``tf.feature_column``; here the same features are built
from Keras preprocessing layers inside the model, so the exported SavedModel takes raw
features and needs no preprocessing at serving time:

* wide: one-hot ``is_male`` and ``plurality``, one-hot buckets of ``mother_age`` (15..44) and
  ``gestation_weeks`` (17..46);
* deep: normalised ``mother_age`` and ``gestation_weeks`` and a 3-d embedding of the hashed
  cross is_male x plurality x gestation bucket (20,000 bins), through Dense(64, relu) and
  Dense(32, relu);
* both concatenated into ``Dense(1, name="weight")``, trained with MSE and Adam.

Every layer lowers to long-standing TensorFlow ops (lookup tables, Bucketize, SparseCrossHashed,
Gather, MatMul), so TensorFlow 2.15, the newest version of Vertex AI's prebuilt TensorFlow
prediction image, loads and serves the export.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from trainer import schema
from trainer.data import SplitSummary

# Intermediate bins of the chained cross: HashedCrossing crosses two features at a time, so the
# three-way cross is built in two steps; with 2**24 bins the 18 distinct intermediate values
# practically never collide, and the last step hashes into 20,000 bins.
#
# The seed's cross also took the age bucket (four ways, some 18,000 cells). Each cell's own
# embedding, learned from a few records, fitted their noise: eval RMSE grew at every evaluation
# after the first, and more training made it worse. Without the age bucket (576 cells; age still
# reaches the deep part normalised and the wide part bucketed) the model beats least squares
# and boosted trees on the same features (README, "Performance").
_INTERMEDIATE_CROSS_BINS = 1 << 24

SERVING_SIGNATURE = {
    "is_male": tf.TensorSpec(shape=[None], dtype=tf.string, name="is_male"),
    "plurality": tf.TensorSpec(shape=[None], dtype=tf.string, name="plurality"),
    "mother_age": tf.TensorSpec(shape=[None], dtype=tf.float32, name="mother_age"),
    "gestation_weeks": tf.TensorSpec(shape=[None], dtype=tf.float32, name="gestation_weeks"),
}


def build_wide_and_deep(
    stats: SplitSummary, learning_rate: float, decay_steps: int | None = None
) -> keras.Model:
    """A compiled wide & deep model over 1-D raw feature inputs; normalised with ``stats``.

    With ``decay_steps`` the learning rate follows a cosine from ``learning_rate`` down to 5% of
    it at the last step, so the final weights (the ones exported) do not carry the noise of the
    last few large steps.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    schedule = learning_rate
    if decay_steps:
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps, alpha=0.05)
    inputs = {
        name: keras.Input(shape=(), dtype=spec.dtype.name, name=name)
        for name, spec in SERVING_SIGNATURE.items()
    }
    is_male_onehot = layers.StringLookup(
        vocabulary=list(schema.IS_MALE_VALUES), output_mode="one_hot", name="is_male_onehot"
    )(inputs["is_male"])
    plurality_onehot = layers.StringLookup(
        vocabulary=list(schema.PLURALITY_VALUES), output_mode="one_hot", name="plurality_onehot"
    )(inputs["plurality"])
    age_bucket = layers.Discretization(
        bin_boundaries=list(schema.MOTHER_AGE_BOUNDARIES), name="mother_age_bucket"
    )(inputs["mother_age"])
    gestation_bucket = layers.Discretization(
        bin_boundaries=list(schema.GESTATION_WEEKS_BOUNDARIES), name="gestation_weeks_bucket"
    )(inputs["gestation_weeks"])
    age_onehot = layers.CategoryEncoding(
        num_tokens=len(schema.MOTHER_AGE_BOUNDARIES) + 1, output_mode="one_hot",
        name="mother_age_onehot",
    )(age_bucket)
    gestation_onehot = layers.CategoryEncoding(
        num_tokens=len(schema.GESTATION_WEEKS_BOUNDARIES) + 1, output_mode="one_hot",
        name="gestation_weeks_onehot",
    )(gestation_bucket)
    wide = layers.Concatenate(name="wide")(
        [is_male_onehot, plurality_onehot, age_onehot, gestation_onehot]
    )

    sex_plurality = layers.HashedCrossing(_INTERMEDIATE_CROSS_BINS, name="cross_sex_plurality")(
        (inputs["is_male"], inputs["plurality"])
    )
    crossed = layers.HashedCrossing(schema.CROSS_HASH_BINS, name="cross_all")(
        (sex_plurality, gestation_bucket)
    )
    cross_embedding = layers.Embedding(
        schema.CROSS_HASH_BINS, schema.CROSS_EMBEDDING_DIM, name="cross_embedding"
    )(crossed)
    age_normalised = layers.Normalization(
        axis=None, mean=stats.mother_age_mean, variance=stats.mother_age_variance,
        name="mother_age_normalised",
    )(inputs["mother_age"])
    gestation_normalised = layers.Normalization(
        axis=None, mean=stats.gestation_weeks_mean, variance=stats.gestation_weeks_variance,
        name="gestation_weeks_normalised",
    )(inputs["gestation_weeks"])
    numeric = layers.Concatenate(name="numeric")(
        [layers.Reshape((1,))(age_normalised), layers.Reshape((1,))(gestation_normalised)]
    )
    deep = layers.Concatenate(name="deep_input")([numeric, cross_embedding])
    deep = layers.Dense(64, activation="relu", name="deep_64")(deep)
    deep = layers.Dense(32, activation="relu", name="deep_32")(deep)

    both = layers.Concatenate(name="wide_and_deep")([wide, deep])
    # Starting from the training mean spares the first steps the climb from 0 lb to ~7 lb.
    weight = layers.Dense(
        1, name="weight", bias_initializer=keras.initializers.Constant(stats.label_mean)
    )(both)
    model = keras.Model(inputs=inputs, outputs=weight, name="babyweight_wide_and_deep")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    return model


def export_for_serving(model: keras.Model, model_dir: str) -> None:
    """Write a SavedModel whose ``serving_default`` maps raw 1-D features to ``{"weight": [batch]}``.

    Vertex AI's TensorFlow prediction container turns each JSON instance
    ``{"is_male": "True", "mother_age": 26, ...}`` into these batched tensors.
    """

    @tf.function(input_signature=list(SERVING_SIGNATURE.values()))
    def serve(is_male, plurality, mother_age, gestation_weeks):
        features = {
            "is_male": is_male,
            "plurality": plurality,
            "mother_age": mother_age,
            "gestation_weeks": gestation_weeks,
        }
        predicted = model(features, training=False)
        return {"weight": tf.reshape(predicted, [-1])}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(model_dir, verbose=False)
