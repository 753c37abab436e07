# Two commands: `make demo` and `make test`. Each creates .venv on first use and reuses it
# while the dependency lists are unchanged (the stamp file is keyed on their hash).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPENDENCY_FILES := requirements.txt requirements-nodeps.txt setup.py
DEPENDENCY_HASH := $(shell cat $(DEPENDENCY_FILES) | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(DEPENDENCY_HASH)

# DDS stays on this machine; override ROS_DOMAIN_ID to share a domain with other nodes.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# Our interfaces (threed_llm_interfaces: msg/ and action/) are built with CMake into .venv, again
# whenever a definition changes or the wheels are reinstalled (the wheels' exported include paths
# are fixed first; see threed_llm_ros/build_interfaces.py).
INTERFACE_FILES := $(sort $(wildcard msg/*.msg srv/*.srv action/*.action vendor/tf2_msgs/msg/*.msg)) threed_llm_interfaces/CMakeLists.txt threed_llm_interfaces/package.xml vendor/tf2_msgs/CMakeLists.txt vendor/tf2_msgs/package.xml
INTERFACES_HASH := $(shell cat $(INTERFACE_FILES) | sha256sum | cut -c1-16)
INTERFACES_STAMP := $(VENV)/.interfaces-$(INTERFACES_HASH)
# colcon lives in its own small venv: colcon-core pins setuptools<80 (requirements-colcon.txt).
COLCON_VENV := .venv-colcon
COLCON_STAMP := $(COLCON_VENV)/.installed-$(shell cat requirements-colcon.txt | sha256sum | cut -c1-16)

.PHONY: venv lint interfaces colcon-tools lm-export test test-fast demo bench bench-peers clean system-deps train train-objects eval-real

all: interfaces

venv: $(STAMP)

interfaces: $(INTERFACES_STAMP)

$(INTERFACES_STAMP): $(STAMP) $(INTERFACE_FILES)
	$(PY) -m threed_llm_ros.build_interfaces --prefix $(VENV)
	@rm -f $(VENV)/.interfaces-*
	@touch $@

colcon-tools: $(COLCON_STAMP)

$(COLCON_STAMP): requirements-colcon.txt
	@test -x $(COLCON_VENV)/bin/python || $(PYTHON) -m venv $(COLCON_VENV)
	$(COLCON_VENV)/bin/python -m pip install --quiet -r requirements-colcon.txt
	@rm -f $(COLCON_VENV)/.installed-*
	@touch $@

$(STAMP): $(DEPENDENCY_FILES)
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# open3d's wheel links against libusb-1.0, and the interface build compiles C++ type support and a
# Python extension (rosidl: g++, Python.h); install them with apt when they are missing.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
		echo "installing libusb-1.0-0 (needed by open3d)"; \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libusb-1.0-0; \
	fi
	@if ! $(PYTHON) -c "import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then \
		VERSION=$$($(PYTHON) -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"); \
		echo "installing python$$VERSION-dev (Python.h: the interfaces' Python extension)"; \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq python$$VERSION-dev; \
	fi
	@if ! command -v g++ >/dev/null 2>&1; then \
		echo "installing g++ (the interfaces' C++ type support)"; \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq g++; \
	fi

# The shipped checkpoint's language model as ONNX decoders of the default lm_precision (mixed: the default
# adapter int4, the programs adapter int8; lm_backend auto serves replies with them on the CPU): made once per
# weights into models/threed-llm-mini/onnx (git-ignored), about 35-60 s on two cores; a few seconds when already there. Without it, the first node start makes it (and says
# so); where it cannot be made, lm_backend auto decodes with torch, so a failure here does not stop make.
SHIPPED_CHECKPOINT := models/threed-llm-mini
lm-export: venv
	@if [ -f $(SHIPPED_CHECKPOINT)/model.safetensors ]; then \
		$(VENV)/bin/threed-llm export-lm --checkpoint $(SHIPPED_CHECKPOINT) \
		|| echo "lm-export failed (above): lm_backend auto will decode with torch"; \
	fi

# The linter first (seconds): unused or undefined names and syntax errors fail the run (ruff.toml).
lint: venv
	$(VENV)/bin/ruff check --no-cache threed_llm_ros test launch

test: venv lint interfaces colcon-tools lm-export
	$(PY) -m pytest -q -ra --durations=20

test-fast: venv lint interfaces
	$(PY) -m pytest -q -ra -m "not slow"

demo: venv interfaces lm-export
	$(PY) -m threed_llm_ros.ros.demo

# The shipped models, each by one command (CPU times on the 2-core development machine are in
# the model cards). `train` runs every stage of models/threed-llm-mini in order (about 3.6 h),
# its object-token projector last (`train-object-tokens`, about 28 min), after the object
# classifier's refiner and a comparison retrain of its shape classifier (`train-objects`, about 8 min).
TRAIN := $(VENV)/bin/threed-llm train
train: venv train-objects
	$(TRAIN) --config config/train_mini.yaml
	$(TRAIN) --config config/train_mini_head.yaml
	$(TRAIN) --config config/train_mini_words.yaml --max-steps 1000
	$(TRAIN) --config config/train_mini_votes.yaml
	$(TRAIN) --config config/train_mini_instances.yaml
	$(TRAIN) --config config/train_mini_programs.yaml
	cp runs/train_mini_programs/final/* models/threed-llm-mini/
	$(VENV)/bin/threed-llm train-object-tokens
	$(MAKE) --no-print-directory lm-export

# The object classifier: its look-alike refiner is reproduced (within float drift) into models/object-classifier;
# the shape classifier is retrained into runs/object-classifier and NOT installed: the shipped one
# is a good draw of an older proposal stage that no recipe of today reproduces (its model card,
# "Retraining"). Compare the two with eval-real / eval-objects before replacing it.
train-objects: venv
	$(VENV)/bin/threed-llm train-objects --only refiner --output models/object-classifier
	$(VENV)/bin/threed-llm train-objects --only classifier --output runs/object-classifier
	rm -rf runs/object-classifier/refiner && cp -r models/object-classifier/refiner runs/object-classifier/
	@echo "train-objects: refiner reproduced in models/object-classifier/refiner; shape classifier retrained in"
	@echo "  runs/object-classifier, not installed (see models/object-classifier/README.md, Retraining). Compare:"
	@echo "  threed-llm eval-real --realdata ../shared/realdata --classifier runs/object-classifier --output runs/real_retrained"

# The object layer on the real frames of ../shared/realdata: real_out/realdata.md and PNG overlays.
eval-real: venv
	$(VENV)/bin/threed-llm eval-real --realdata ../shared/realdata --output real_out

bench: venv
	$(VENV)/bin/threed-llm bench-conversions --output bench_out/conversions.json
	$(VENV)/bin/threed-llm bench --output bench_out/bench.json

# The same benchmark with llama.cpp beside it: llama-cpp-python builds llama.cpp from source
# (cmake + gcc; only the library, 193 objects: 24 minutes at nice 19 on 2 busy cores), so it is not
# part of the default environment.
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
LLAMA_CPP_CMAKE_ARGS := -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON
bench-peers: venv
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(PY) -m pip install --quiet $(LLAMA_CPP_PYTHON)
	$(VENV)/bin/threed-llm bench --output bench_out/bench_peers.json

clean:
	rm -rf $(VENV) $(COLCON_VENV) build install log demo_out bench_out real_out .pytest_cache .hypothesis
