# wim2vhd: set-up, tests, demo and benchmarks on Debian 12.
#   make demo    set up, build the sample WIM from fixtures/, apply it, print how to boot it
#   make test    set up and run the test suite
#   make bench   set up and run the benchmarks (not part of make test)
#   make fuzz    set up and run every fuzz target for FUZZ_SECONDS (default 60) each (docs/fuzzing.md)
#   make sanitize  the native layer's tests against a build with ASan and UBSan (build/sanitize)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := wimtools libwim-dev ntfs-3g ntfs-3g-dev libhivex-dev libhivex-bin \
	dosfstools mtools grub-pc-bin grub-efi-amd64-bin grub-common qemu-utils \
	qemu-system-x86 ovmf libvhdi-utils 7zip gdisk fdisk xorriso pkg-config libcap2-bin libregf-utils zlib1g-dev
NATIVE_SRC := $(wildcard native/*.c native/*.h native/cdefs/*.h native/build_native.py)
NATIVE_SO = $(firstword $(wildcard wim2vhd/_native*.so) wim2vhd/_native.so)
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?=
FUZZ_TARGETS := vhd vhdx qcow2 hive bcd bcd_element regfile iso partition

SAN_DIR := build/sanitize
# The tests that drive the native layer: disk formats, the cache and writer threads, read-ahead, apply and
# capture on the fixture.
SAN_TESTS ?= tests/test_disk.py tests/test_disk_interop.py tests/test_readahead.py tests/test_apply.py \
	tests/test_capture.py tests/test_ntfs.py tests/test_fs.py
SAN_FUZZ_SECONDS ?= 15
# Python keeps its objects until exit by design: no leak report.  Every UBSan finding is fatal too.  The
# allocator refuses (MemoryError) what the fuzz runs' address-space limit would have refused.
SAN_ENV = LD_PRELOAD=$$(gcc -print-file-name=libasan.so) PYTHONPATH=$(CURDIR)/$(SAN_DIR):$(CURDIR) PYTHONSAFEPATH=1 \
	PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=6144 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: setup apt venv native pyc test demo bench fuzz sanitize clean

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

# A separate build of native/ with -fsanitize=address,undefined (native/build_sanitized.py); the normal one in
# wim2vhd/ is not touched.  Then the native layer's tests, the disk fuzz targets' corpora, and a short run of
# mutations of them (under ASan the fuzzer has no coverage to follow: see docs/fuzzing.md), against it.
sanitize: setup
	@mkdir -p $(SAN_DIR); $(PY) native/build_sanitized.py $(SAN_DIR) >$(SAN_DIR)/build.log 2>&1 || \
		{ tail -30 $(SAN_DIR)/build.log; exit 1; }
	@$(SAN_ENV) $(PY) -c "import wim2vhd._native as n; assert '/$(SAN_DIR)/' in n.__file__, n.__file__; \
		assert 'libasan' in open('/proc/self/maps').read(); print('sanitized build:', n.__file__)"
	$(SAN_ENV) $(PY) -m pytest -q -p no:cacheprovider --capture=sys $(SAN_TESTS) $(PYTEST_ARGS)
	@for t in vhd vhdx; do \
		$(SAN_ENV) $(PY) -m tests.fuzz.run $$t --replay >$(SAN_DIR)/replay-$$t.json 2>$(SAN_DIR)/replay-$$t.log || \
			{ tail -60 $(SAN_DIR)/replay-$$t.log; exit 1; }; \
		if grep -v '"kept": true' $(SAN_DIR)/replay-$$t.json | grep -v '"known": "'; then \
			echo "sanitize: the $$t corpus broke the promise"; exit 1; fi; \
		echo "sanitize: $$t corpus: $$(wc -l <$(SAN_DIR)/replay-$$t.json) inputs"; \
		$(SAN_ENV) $(PY) -m tests.fuzz.run $$t --seconds $(SAN_FUZZ_SECONDS) -seed=1 2>$(SAN_DIR)/fuzz-$$t.log || \
			{ tail -60 $(SAN_DIR)/fuzz-$$t.log; exit 1; }; \
		grep -E '^Done ' $(SAN_DIR)/fuzz-$$t.log | sed "s/^/sanitize: $$t mutations: /"; \
	done

clean:
	rm -rf build $(VENV) wim2vhd/_native*.so native/*.o *.egg-info
