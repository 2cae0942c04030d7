"""deploy.sh's Python side: the helpers it runs and the files it stages into the cloud.

A package so that the layer contracts in pyproject.toml ([tool.importlinter]) can check what it
imports; it is not part of the mlrelay distribution (pyproject's packages.find leaves it out), and
deploy.sh runs ``deploy/deploy_helpers.py`` as a script.
"""
