# The two commands that matter: `make demo` (main job) and `make test`. Both set up what is missing.
SHELL := /bin/bash
VENV := .venv
RUN := scripts/env.sh
SOURCE ?= sim
DURATION ?= 20
ARGS ?=
# Generated data that can be rebuilt (the simulator's demo bag) stays inside the checkout.
export IPHD_CACHE_DIR ?= $(CURDIR)/out/cache
MSG_FILES := $(wildcard ros2_ws/src/iphd_msgs/msg/*.msg ros2_ws/src/iphd_msgs/srv/*.srv) \
             ros2_ws/src/iphd_msgs/CMakeLists.txt \
             ros2_ws/src/iphd_msgs/package.xml

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.iphd-setup ros2_ws/install/.iphd-msgs-built

$(VENV)/.iphd-setup: requirements.txt requirements-nodeps.txt constraints.txt setup.py scripts/setup.sh
	scripts/setup.sh venv

ros2_ws/install/.iphd-msgs-built: $(VENV)/.iphd-setup $(MSG_FILES)
	scripts/setup.sh msgs

demo: setup
	$(RUN) iphd-run --source $(SOURCE) --duration $(DURATION) $(ARGS)

lint: setup
	$(RUN) ruff check src tests benchmarks launch calibration training
	$(RUN) mypy src/iphd

test: lint
	$(RUN) python -m pytest -q $(ARGS)

bench: setup
	$(RUN) python benchmarks/bench_fusion.py
	$(RUN) python benchmarks/bench_sim.py
	$(RUN) python benchmarks/bench_detector.py
	$(RUN) python benchmarks/bench_reid.py

clean:
	rm -rf $(VENV) ros2_ws/build ros2_ws/install ros2_ws/log \
		.venv-jazzy ros2_ws/build-jazzy ros2_ws/install-jazzy ros2_ws/log-jazzy \
		.venv-robot ros2_ws/build-robot ros2_ws/install-robot ros2_ws/log-robot \
		.venv-robot-kilted ros2_ws/build-robot-kilted ros2_ws/install-robot-kilted \
		ros2_ws/log-robot-kilted
