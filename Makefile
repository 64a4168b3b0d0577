# wim2vhd: set-up, tests, demo and benchmarks on Debian 12.
#   make demo    set up, build the sample WIM from fixtures/, apply it, print how to boot it
#   make test    set up and run the test suite
#   make bench   set up and run the benchmarks (not part of make test)
#   make fuzz    set up and run every fuzz target for FUZZ_SECONDS (default 60) each (docs/fuzzing.md)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := wimtools libwim-dev ntfs-3g ntfs-3g-dev libhivex-dev libhivex-bin \
	dosfstools mtools grub-pc-bin grub-efi-amd64-bin grub-common qemu-utils \
	qemu-system-x86 ovmf libvhdi-utils 7zip gdisk fdisk xorriso pkg-config libcap2-bin libregf-utils
NATIVE_SRC := $(wildcard native/*.c native/*.h native/cdefs/*.h native/build_native.py)
NATIVE_SO = $(firstword $(wildcard wim2vhd/_native*.so) wim2vhd/_native.so)
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?=
FUZZ_TARGETS := vhd vhdx hive bcd bcd_element regfile iso partition

.PHONY: setup apt venv native pyc test demo bench fuzz clean

setup: apt venv native pyc

# Install what is missing, quietly; nothing to do when everything is there.
apt:
	@missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(APT_PACKAGES) 2>/dev/null | \
		awk '$$NF!="installed"{print $$1}'; for p in $(APT_PACKAGES); do \
		dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$$(echo $$missing | tr -d ' ')" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.deps-stamp

$(VENV)/.deps-stamp: pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip setuptools wheel cffi
	@$(PY) -m pip install -q -e '.[test,fuzz]'
	@touch $@

native: $(VENV)/.native-stamp

$(VENV)/.native-stamp: $(NATIVE_SRC) $(VENV)/.deps-stamp
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# An editable install leaves the package uncompiled, and with PYTHONDONTWRITEBYTECODE set (as on
# some CI machines) every run would compile it again: about 0.05 s of each command's start.
pyc: native
	@$(PY) -m compileall -q wim2vhd >/dev/null

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(PY) -m wim2vhd.demo

bench: setup
	$(PY) -m tests.bench

# One coverage-guided run per parser of untrusted input (tests/fuzz/run.py); stops at the first input that
# breaks the promise and leaves it in build/fuzz/TARGET/.
fuzz: setup
	@mkdir -p build/fuzz; for t in $(FUZZ_TARGETS); do \
		log=build/fuzz/$$t.log; \
		$(PY) -m tests.fuzz.run $$t --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS) 2>$$log; rc=$$?; \
		grep -E '^(fuzz |Done |INFO: seed corpus|stat::(number_of_executed_units|new_units_added))' $$log; \
		if [ $$rc -ne 0 ]; then tail -40 $$log; echo "fuzz $$t: the promise broke (exit $$rc), see $$log"; exit 1; fi; \
	done

clean:
	rm -rf build $(VENV) wim2vhd/_native*.so native/*.o *.egg-info
