"""Setup file for Dataflow workers (``--setup_file``): ships the beam_pipeline package.

Beam runs ``python setup.py sdist`` in this directory when it stages a Dataflow job and
installs the result on every worker. Workers already have Beam, pyarrow and numpy (the
Beam SDK container); they need only farmhash beyond that.
"""

import setuptools

setuptools.setup(
    name="mlrelay-beam-pipeline",
    version="0.1.0",
    description="mlrelay's natality preprocessing pipeline (Beam transforms for Dataflow workers)",
    package_dir={"beam_pipeline": "."},
    packages=["beam_pipeline"],
    install_requires=["pyfarmhash==0.5.1"],
    python_requires=">=3.10",
)
