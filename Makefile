# Two commands do everything: `make demo` and `make test`. Each builds .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export GLOG_v ?= 3

.PHONY: demo test clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

# stamps: reinstall only when the requirement files change
$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# the own CPU kernels, compiled for this machine into the kernel cache (src/kernels/build.py); without a
# compiler this prints one line and the model keeps MindSpore's ops, so it never fails the set-up
$(VENV)/.kernels: $(wildcard src/kernels/csrc/*) src/kernels/build.py $(VENV)/.runtime
	$(PY) -m src.kernels
	touch $@

# the demo uses the extras too: matplotlib draws the curves, scikit-learn's digits stand in for
# Fashion-MNIST when its Debian package cannot be installed
demo: $(VENV)/.dev $(VENV)/.kernels
	$(PY) demo.py

# two pytest-xdist workers: most of the suite's time is single-threaded graph compilation and process
# start-up, which two processes overlap on two cores. loadfile runs each test file on one worker, so a
# module fixture (and the graphs its net compiles) is built once. (TEST_WORKERS=0: one process.)
TEST_WORKERS ?= 2
test: $(VENV)/.dev $(VENV)/.kernels
	$(PY) -m pytest tests -q -n $(TEST_WORKERS) --dist loadfile

clean-venv:
	rm -rf $(VENV)
