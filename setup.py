"""The package list, which setup.cfg cannot express: two folders install under other names.

``deploy/`` installs as ``rendezvous_deploy`` and ``examples/pipeline/`` as
``rendezvous_pipeline``, so the wheel puts no generic top-level name (``deploy``,
``examples``) into site-packages. Everything else is in setup.cfg.
"""

from pathlib import Path

from setuptools import find_packages, setup

MAPPED = {"rendezvous_deploy": "deploy", "rendezvous_pipeline": "examples/pipeline"}

packages = find_packages(include=["rendezvous", "rendezvous.*", "fmi_client", "fmi_client.*",
                                  "tcpunch", "tcpunch.*"])  # fmt: skip
# A partial source tree (the server image's wheel is built without the pipeline) maps
# only the folders it has.
present = {name: folder for name, folder in MAPPED.items() if Path(folder).is_dir()}
for name, folder in present.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]
# data folders without __init__.py: named, so setuptools ships them as package data
packages.append("fmi_client.shim")  # fmi.py, the `fmi` module of the layer and image
if "rendezvous_pipeline" in present:
    packages.append("rendezvous_pipeline.weights")

setup(packages=packages, package_dir=present)
