"""The preprocess output contract as the trainer reads it, and the model's feature vocabularies.

Kept free of TensorFlow so that input validation and tests can use it without loading TF.
"""

# Column order of every train/eval shard (no header line).
CSV_COLUMNS = ("weight_pounds", "is_male", "mother_age", "plurality", "gestation_weeks", "key")
LABEL_COLUMN = "weight_pounds"
FEATURE_COLUMNS = ("is_male", "mother_age", "plurality", "gestation_weeks")
STRING_FEATURES = ("is_male", "plurality")
NUMERIC_FEATURES = ("mother_age", "gestation_weeks")
# Columns parsed as numbers; "38" and "38.0" are both accepted.
NUMERIC_COLUMNS = ("weight_pounds", "mother_age", "gestation_weeks")

IS_MALE_VALUES = ("True", "False", "Unknown")
PLURALITY_VALUES = (
    "Single(1)",
    "Twins(2)",
    "Triplets(3)",
    "Quadruplets(4)",
    "Quintuplets(5)",
    "Multiple(2+)",
)

# Bucket boundaries of the original babyweight model: one bucket per year of age from 15
# to 44 and per week of gestation from 17 to 46, plus one bucket below and one above.
MOTHER_AGE_BOUNDARIES = tuple(float(age) for age in range(15, 45))
GESTATION_WEEKS_BOUNDARIES = tuple(float(week) for week in range(17, 47))
CROSS_HASH_BINS = 20_000
CROSS_EMBEDDING_DIM = 3

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_FORMAT = "mlrelay.preprocess/v1"
SPLITS = ("train", "eval")
SAMPLE_GENERATOR_WITH_BAYES_FLOOR = "natality_sample"
