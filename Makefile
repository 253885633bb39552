# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-quick lint bench mosquitto venv clean vendor wheel wheelhouse

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed (found $$($(PYTHON) --version))"; exit 1; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[convert,dev,fleet]'
	touch $(STAMP)

venv: $(STAMP)

# The agent's tests talk to a real broker; the systemd tests verify the unit with systemd-analyze and
# lint the install script with shellcheck; the TLS tests make certificates with openssl; the dashboard's
# tests drive chromium. Install from apt whatever of these is missing.
APT_TOOLS := mosquitto:mosquitto mosquitto_sub:mosquitto-clients systemd-analyze:systemd shellcheck:shellcheck openssl:openssl
APT_TOOLS += chromium:chromium
# The MQTT 3.1.1 and broker cluster tests run Debian's nats-server (MQTT 3.1.1 only, JetStream).
APT_TOOLS += nats-server:nats-server
mosquitto:
	@missing=""; for pair in $(APT_TOOLS); do \
		tool=$${pair%%:*}; package=$${pair##*:}; \
		command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing with apt:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: $(STAMP) mosquitto
	$(PY) -m pytest

test-quick: $(STAMP) mosquitto
	$(PY) -m pytest -m "not slow and not fault"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: $(STAMP) mosquitto
	$(PY) -m benchmarks.demo

# Every benchmark in one go (about half an hour on an idle 2-core machine), stitched into
# benchmarks/results/REPORT.md. One part alone: make bench BENCH_ARGS="--only broker".
bench: $(STAMP) mosquitto
	$(PY) -m benchmarks.report $(BENCH_ARGS)

# The agent on an emulated Pi 4 and Pi 5 (Debian bookworm arm64 root, qemu-user), FP32 and INT8,
# against the x86 run of the same command; see benchmarks/pi/pi_check.sh. Needs root for debootstrap.
.PHONY: pi-check
# PY=... on the command line: that interpreter's environment is used as it is (no `make venv`, which
# would repoint its editable install at this checkout); the check runs this checkout's code either way.
# The script changes directory before it runs the interpreter: hand it an absolute path (a bare
# name such as PY=python3 is left for the script to find on PATH; abspath keeps the venv's symlink).
pi-check: $(if $(filter command line,$(origin PY)),,$(STAMP))
	PI_CHECK_PYTHON=$(if $(findstring /,$(PY)),$(abspath $(PY)),$(PY)) benchmarks/pi/pi_check.sh

# The dashboard's vendored libraries (mqtt.js, uPlot) again from the npm registry, at the versions pinned there.
vendor:
	fleet/dashboard/refresh-vendor.sh

# The project as one wheel in $(DIST)/, to copy to a Pi without internet (docs/systemd.md#a-pi-without-internet).
DIST ?= dist
# pip builds in the checkout's build/: removed again unless it was there before (install.sh's test checks it).
wheel: $(STAMP)
	@had_build=$$([ -d build ] && echo yes); \
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(DIST) . && status=0 || status=$$?; \
	[ -n "$$had_build" ] || rm -rf build; \
	exit $$status
	@ls $(DIST)/yolo_edge-*.whl

# That wheel and the agent's dependencies for a 64-bit Pi (Raspberry Pi OS 12, Python 3.11), and the
# build backend install.sh needs: `pip install --no-index --find-links $(DIST) yolo-edge` needs no network.
PI_WHEEL_ARGS := --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --python-version 3.11
wheelhouse: wheel
	$(PY) -m pip download --quiet --dest $(DIST) $(PI_WHEEL_ARGS) $(DIST)/yolo_edge-*.whl $(PI_WHEEL_EXTRA) 'setuptools>=68' wheel
	@ls $(DIST)

clean:
	rm -rf $(VENV) demo-out .pytest_cache build dist
