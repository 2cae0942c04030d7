"""The trainer as a Python source distribution for Vertex AI custom training.

Vertex AI installs this sdist on a prebuilt training image and runs ``python -m trainer.task``.
``deploy.trainer_sdist.build_trainer_sdist`` (deploy.sh's build-sdist) copies this file to the root
of a staging directory next to ``trainer/`` and ``natality_sample/`` and runs ``setup.py sdist`` there.
"""

from setuptools import setup

setup(
    name="mlrelay-trainer",
    version="0.1.0",
    description="mlrelay's babyweight wide & deep trainer for Vertex AI custom training",
    packages=["trainer", "natality_sample"],
    package_data={"natality_sample": ["*.json"]},
    python_requires=">=3.10",
    # Nothing: the trainer imports only TensorFlow, Keras 3 and numpy, which Vertex AI's prebuilt
    # TensorFlow training image (tf-cpu.2-17.py310 or newer: the trainer needs Keras 3) already
    # has. Declaring them would let pip replace the image's tuned TensorFlow at job start, and
    # any download there slows every job and fails without internet access. natality_sample is
    # shipped only for the Bayes floor in metrics.json on synthetic data; where its imports
    # (pyarrow, pandas) are missing the trainer records the floor as null and trains as usual.
    install_requires=[],
)
