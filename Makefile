# Tested versions; setup.py declares the ranges other machines may use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

QUICKSTART := output/quickstart
SHAPES := datasets/shapes

.PHONY: env test test-fast quickstart benchmark gpu-check clean

env: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[test]" $(TORCH_PINS)
	touch $@

test: env
	$(PY) -m pytest -q -ra

test-fast: env
	$(PY) -m pytest -q -ra -m "not slow"

# Everything on a fresh machine: environment, data, training, COCO evaluation, drawn detections, plots.
quickstart: env
	@test -f $(SHAPES)/annotations/val.json || $(PY) datasets/make_shapes.py --out $(SHAPES)
	$(PY) tools/train.py configs/quickstart_shapes.py --output-dir $(QUICKSTART) --tensorboard
	$(PY) tools/predict.py configs/quickstart_shapes.py --weights $(QUICKSTART)/model_final.pth \
		--input "$(SHAPES)/val/images/00000*.jpg" --output-dir $(QUICKSTART)/detections
	$(PY) tools/plot.py $(QUICKSTART)
	@echo "metrics: $(QUICKSTART)/metrics.json, detections: $(QUICKSTART)/detections/, plots: $(QUICKSTART)/*.png"

# Inference and training-step times beside torchvision's model (a long run on a CPU);
# BENCH_PY=<a Python that imports detectron2> adds Detectron2's column.
BENCH_PY ?= $(PY)
benchmark: env
	PYTHONPATH=$(CURDIR) $(BENCH_PY) tools/benchmark.py --json docs/benchmark/cpu.json

# On one CUDA GPU (under 8 minutes): the cuda tests, training and inference images/s beside torchvision,
# peak memory, the loader's images/s per worker; writes docs/gpu.md and docs/gpu.json.
gpu-check: env
	$(PY) tools/gpu_check.py

clean:
	rm -rf output .pytest_cache
