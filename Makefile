# One venv in the repo holds everything the tests, the demo and the benchmarks need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup test lint serve demo image bench system-deps clean

setup: $(STAMP)

# torch==2.13.0 is the CPU build this project pins (other specs may pull CUDA wheels).
$(STAMP): setup.cfg pyproject.toml
	@echo "setup: [1/3] virtual environment in $(VENV)/"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	@echo "setup: [2/3] torch 2.13.0, CPU build (the largest download; pip shows progress)"
	$(PIP) install --progress-bar on torch==2.13.0
	@echo "setup: [3/3] this project, editable, with its server, aws, pipeline and test extras"
	$(PIP) install --quiet -e '.[server,aws,pipeline,numpy,test]'
	touch $@
	@echo "setup: done; commands are in $(VENV)/bin (rendezvous, rendezvous-deploy, fmi-layer)"

lint: setup
	$(VENV)/bin/ruff check .

# Lint, strict type check of the shipped packages (mypy.ini), then every test.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

serve: setup
	$(VENV)/bin/rendezvous serve

# The inference pipeline on this machine: generated data (once), world sizes 1, 2, 4, 8,
# one process per rank, an in-process rendezvous server; prints the table and plot path.
DEMO_DATA := build/demo-data
demo: setup
	test -f $(DEMO_DATA)/16.pt || $(VENV)/bin/rendezvous-deploy pipeline generate \
		$(DEMO_DATA) --files 16 --samples 256 --force
	$(VENV)/bin/rendezvous-deploy pipeline run --local --world-size 1,2,4,8 \
		--data $(DEMO_DATA) --results build/demo

# The server image (docker/). The build needs no network: `wheels` fetches every wheel on
# the host into docker/wheels/ (CPython 3.11 to 3.13). BASE_IMAGE=... changes the base
# (default python:3.12-slim), RENDEZVOUS_IMAGE=... the tag (as in docker/compose.yaml).
# `base-image` makes a local Debian base where no registry can be reached:
#   make base-image image BASE_IMAGE=localhost/rendezvous-base:bookworm
# (podman on our CI machines also needs CONTAINERS_CONF=$PWD/docker/containers.conf).
.PHONY: wheels base-image
WHEEL_PYTHONS ?= 3.11 3.12 3.13
RENDEZVOUS_IMAGE ?= rendezvous:latest
ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
	elif command -v podman >/dev/null 2>&1; then echo podman; else echo docker; fi)

wheels:
	bash docker/build-wheels.sh $(WHEEL_PYTHONS)

base-image:
	bash docker/local-base-image.sh localhost/rendezvous-base:bookworm

# podman needs --format docker to keep the HEALTHCHECK (OCI images have none).
image: wheels
	$(ENGINE) build $(if $(filter podman,$(ENGINE)),--format docker) \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		-t $(RENDEZVOUS_IMAGE) docker
	@$(ENGINE) image inspect --format '$(RENDEZVOUS_IMAGE) is {{.Size}} bytes' \
		$(RENDEZVOUS_IMAGE)

# The rendezvous server's load benchmark (figures for BENCHMARKS.md; takes a few minutes).
.PHONY: bench-server
bench-server: setup
	$(PY) benchmarks/server_load.py --rounds 3

# The client's Lambda layer (pure Python: fmi_client + tcpunch) and its benchmarks
# (figures for BENCHMARKS.md; client_natlab needs root, the mpi4py comparison needs
# `apt-get install libopenmpi-dev openmpi-bin` and `pip install -e '.[bench]'`).
.PHONY: layer bench-client
layer: setup
	$(VENV)/bin/fmi-layer build -o build/fmi-layer.zip

bench-client: setup
	$(PY) benchmarks/client_p2p.py --rounds 15 --rtt-iters 2000
	$(PY) benchmarks/client_exchange.py
	$(PY) benchmarks/client_allreduce.py
	$(PY) benchmarks/client_mesh.py
	$(PY) benchmarks/client_natlab.py

# The local pipeline's share of time in rendezvous + collectives (about 3 minutes).
.PHONY: bench-pipeline
bench-pipeline: setup
	$(PY) benchmarks/pipeline_share.py --repeat 3

bench: bench-server bench-client bench-pipeline

# Debian packages the full test suite uses (CI runs this as root).
system-deps:
	bash .ci/system-deps

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
