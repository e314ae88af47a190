# SSD300 on Triton. `make demo` and `make test` work on a fresh clone: every target sets up
# .venv first. Run `make help` for the list.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
REPOSITORY := model_repository
MODEL := $(REPOSITORY)/ssd300/1/model.pt

WEIGHTS ?= auto
# ENGINE=onnx also writes model.onnx and the embedded server runs it with ONNX Runtime: the
# default, because `make bench` measures it faster than TorchScript on CPUs (README, figures);
# ENGINE=torchscript builds model.pt only. PRECISION=fp16 builds model.pt with a half-precision
# network (for GPUs), so it implies ENGINE=torchscript: the ONNX model stays FP32.
ENGINE ?= $(if $(filter fp16,$(PRECISION)),torchscript,onnx)
PRECISION ?= fp32
BUILD_OPTIONS = --weights $(WEIGHTS) --engine $(ENGINE) --precision $(PRECISION)
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
PORTS := --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)
# pip lists every local wheel folder it skips; those lines are noise here. (Braces keep pip's
# own exit status in the pipeline.)
PIP_QUIET := { grep -v -e "is ignored: it is neither a file nor a directory" || true; }

# make python-env: the packed environment of the Python-backend models (EXECUTION_ENV_PATH: the
# pinned wheels and common/ssd300_common), for the server's Python (3.10 in the 24.10 container;
# 3.11 for the bundled server here). cuda:
# PyPI's CUDA torch (GPU serving); cpu: PyTorch's CPU build (its index, or TORCH_INDEX_URL).
# TORCH_VERSION overrides the pin in build/ssd300_build/python_env.txt. The serving image builds
# the same environment as a folder used in place (--unpacked, deploy/Dockerfile): no unpacking.
PYTHON_ENV_VERSION ?= 3.10
TORCH_VARIANT ?= cuda
TORCH_VERSION ?=
TORCH_INDEX_URL ?=
PYTHON_ENV := $(REPOSITORY)/python_env.tar.gz

LOAD_TIME ?= 60s
LOAD_USERS ?= 8

# Serving image and chart (need Docker / a cluster; not used by the targets above).
IMAGE ?= ssd300-triton
TAG ?= 0.1.0
REGISTRY ?= registry.example.com/vision
NAMESPACE ?= ml
# The image defaults to the NGC checkpoint, not `auto`: a serving image should never be random.
IMAGE_WEIGHTS ?= nvidia
# torchscript (model.pt, libtorch) or onnx (model.onnx too, served by ONNX Runtime + TensorRT with
# `--model-config-name=onnx`); `make deploy` sets the chart's model.engine to match.
IMAGE_ENGINE ?= torchscript

.PHONY: help setup model serve demo test lint bench load eval reliability clean image image-loadtest push deploy perf tools gpu-check python-env stock-torch analyze

help:
	@echo "make demo     build the model (WEIGHTS=auto), serve it, detect objects in sample images"
	@echo "make test     the test suite (starts its own server on free ports)"
	@echo "make lint     ruff (lint + format check) and mypy"
	@echo "make setup    create $(VENV) with pinned dependencies"
	@echo "make model    build $(MODEL)  (WEIGHTS=auto|nvidia|random|<checkpoint path>)"
	@echo "             ENGINE=onnx|torchscript (onnx, the default, adds model.onnx, served by ONNX Runtime), PRECISION=fp32|fp16"
	@echo "make serve    run the embedded tritonserver on 127.0.0.1:$(HTTP_PORT)/$(GRPC_PORT)/$(METRICS_PORT)"
	@echo "make python-env  pack $(PYTHON_ENV) for the stock Triton container (PYTHON_ENV_VERSION=3.10 TORCH_VARIANT=cuda|cpu)"
	@echo "make stock-torch  model.pt, the postprocess and gpu-check under the stock container's torch (2.5.1, ~3 GB into .tools/)"
	@echo "make bench    in-process figures, then perf_analyzer at 1-16 clients (~10 min); reports/bench/, load_tests/BENCHMARK.md"
	@echo "make gpu-check  on a CUDA machine: parity, forward and selection figures into reports/gpu_check/"
	@echo "make load     Locust load test against the embedded server"
	@echo "make perf     perf_analyzer: gRPC, HTTP, shared memory, ssd300_image at 1-4 clients; reports/perf/, load_tests/BENCHMARK.md"
	@echo "make analyze  Triton Model Analyzer 1.45 (.tools/) profiles the CPU configs; reports into reports/analyze/"
	@echo "make tools    unpack perf_analyzer 2.51 and Prometheus 2.42 into .tools/ (make perf/test do it too)"
	@echo "make eval     COCO mAP through the running server (COCO=<dir> [LIMIT=N])"
	@echo "make reliability  bad input, overload, faults, security; figures into docs/reliability-figures.md"
	@echo "make image    build the serving image (Docker; IMAGE_WEIGHTS=nvidia IMAGE_ENGINE=torchscript|onnx)"
	@echo "make deploy   helm upgrade --install the chart (REGISTRY=… NAMESPACE=…)"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip 2>&1 | $(PIP_QUIET)
	$(VENV)/bin/pip install --quiet -r requirements.txt 2>&1 | $(PIP_QUIET)
	$(VENV)/bin/pip install --quiet --no-deps -e . 2>&1 | $(PIP_QUIET)
	$(PY) -W ignore -c "import torch, torchvision, tritonclient.grpc, pytriton, locust, onnxruntime, onnxscript, av"
	touch $@

# Always rebuilds: WEIGHTS may have changed.
model: setup
	$(PY) -m ssd300_build $(BUILD_OPTIONS) --repository $(REPOSITORY)

$(MODEL): | $(STAMP)
	$(PY) -m ssd300_build $(BUILD_OPTIONS) --repository $(REPOSITORY)

# Always rebuilds: PYTHON_ENV_VERSION or TORCH_VARIANT may have changed.
python-env: setup
	$(PY) -m ssd300_build.python_env --python-version $(PYTHON_ENV_VERSION) --torch-variant $(TORCH_VARIANT) \
	  --output $(PYTHON_ENV) $(if $(TORCH_VERSION),--torch-version $(TORCH_VERSION)) \
	  $(if $(TORCH_INDEX_URL),--torch-index-url $(TORCH_INDEX_URL))

serve: setup $(MODEL)
	$(PY) -m ssd300_serving.embedded_server --repository $(REPOSITORY) $(PORTS)

demo: setup $(MODEL)
	$(PY) -m tools.demo --repository $(REPOSITORY) --out out/demo

test: setup
	$(PY) -m pytest -q -ra -m "not slow"

# ruff (lint + format check) over the whole tree, mypy over the shared core and the client library.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# COCO mAP through a running server (start one with `make serve`): COCO=<dir with val2017/ and
# annotations/instances_val2017.json>, optionally LIMIT=<first N images>.
eval: setup
	@test -n "$(COCO)" || { echo "usage: make eval COCO=/path/to/coco [LIMIT=500]  (with \`make serve\` running)"; exit 2; }
	$(PY) -m ssd300_client.evaluation --coco $(COCO) --url 127.0.0.1:$(GRPC_PORT) $(if $(LIMIT),--limit $(LIMIT))

# The suites write their figures only where asked (a plain test run leaves the tree as it was).
RELIABILITY_FIGURES := reports/reliability/figures.json
reliability: setup
	SSD300_RELIABILITY_FIGURES=$(RELIABILITY_FIGURES) $(PY) -m pytest tests/test_reliability_*.py -q -ra
	$(PY) -m tools.reliability_report --figures $(RELIABILITY_FIGURES) --out docs/reliability-figures.md

# In process on the calibrated random network, then perf_analyzer against the built repository (or,
# without one, a temporary copy built with random weights). bench and perf each write their own
# section of load_tests/BENCHMARK.md.
bench: setup
	$(PY) -m load_tests.benchmark

# The first figures to take on a GPU (a few minutes): see load_tests/benchmark/gpu_check.py.
gpu-check: setup $(MODEL)
	$(PY) -m load_tests.benchmark.gpu_check --repository $(REPOSITORY) --out reports/gpu_check

# model.pt is traced by the development torch; the stock 24.10 container loads it with libtorch
# 2.5 and runs the postprocess with the packed environment's torch: check both on the sample
# photos, and run gpu-check under that torch (installed into .tools/; see tools/stock_torch.py).
stock-torch: setup
	$(PY) -m tools.stock_torch

# perf_analyzer from the tritonclient 2.51.0 wheel (+ libb64, libcudart) and Debian's
# Prometheus/promtool, unpacked into .tools/ (nothing installed into the system); idempotent.
tools: setup
	$(PY) -m load_tests.external_tools

# The runner of make bench over every scenario; without a built model, serves random weights.
perf: setup
	$(PY) -m load_tests.benchmark --perf

# Model Analyzer (its own venv in .tools/) drives the bundled server through a generated launcher
# with load_tests/analyze/cpu.yaml; a few minutes on 2 cores. docs/model-analyzer.md.
analyze: setup $(MODEL)
	$(PY) -m load_tests.analyze --reports reports/analyze

load: setup $(MODEL)
	$(PY) -m load_tests.run --http-url 127.0.0.1:$(HTTP_PORT) --grpc-url 127.0.0.1:$(GRPC_PORT) --run-time $(LOAD_TIME) --users $(LOAD_USERS)

clean:
	rm -rf reports out $(MODEL) $(REPOSITORY)/ssd300/1/model.onnx $(REPOSITORY)/ssd300/1/weights.json $(PYTHON_ENV)

image:
	docker build -f deploy/Dockerfile --build-arg WEIGHTS=$(IMAGE_WEIGHTS) --build-arg ENGINE=$(IMAGE_ENGINE) \
	  -t $(IMAGE):$(TAG) .

image-loadtest:
	docker build -f deploy/Dockerfile --target loadtest -t $(IMAGE)-loadtest:$(TAG) .

push: image image-loadtest
	for i in $(IMAGE) $(IMAGE)-loadtest; do docker tag $$i:$(TAG) $(REGISTRY)/$$i:$(TAG) && docker push $(REGISTRY)/$$i:$(TAG); done

deploy:
	helm upgrade --install ssd300-triton deploy/helm/ssd300-triton -n $(NAMESPACE) --create-namespace \
	  --set image.repository=$(REGISTRY)/$(IMAGE) --set image.tag=$(TAG) --set model.engine=$(IMAGE_ENGINE)
