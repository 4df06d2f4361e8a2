# Two commands a new user needs: `make demo` and `make test`. Each installs missing Debian
# packages (tools/install_deps.sh), configures a Release build in build/ and builds.
BUILD   ?= build
JOBS    ?= $(shell nproc)
PYTHON  ?= /usr/bin/python3
WERROR  ?= $(if $(CI),ON,OFF)
CMAKE_FLAGS ?=
# `make demo` runs on model B (data/model_nl, GQA on natural text); DEMO_MODEL=a runs the first model.
DEMO_MODEL ?= b

.PHONY: deps configure build test test-reliability demo bench docs clean

deps:
	@tools/install_deps.sh all

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON) \
	  -DSPARSEBUDGET_WERROR=$(WERROR) -DSPARSEBUDGET_BUILD_PYTHON=ON $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# Sanitizers (ASan+UBSan, TSan) over the whole suite, libFuzzer targets, clang-tidy and cppcheck
# (tools/reliability.sh; about 30 minutes on 2 cores). CI runs it after `make test`.
test-reliability: deps
	@tools/reliability.sh

demo: configure
	@SPARSEBUDGET_DEMO_MODEL=$(DEMO_MODEL) cmake --build $(BUILD) -j $(JOBS) --target demo

bench: build
	@cmake --build $(BUILD) --target bench

clean:
	rm -rf $(BUILD)

docs: deps
	@mkdir -p $(BUILD)/docs/doxygen && (cat Doxyfile; echo "OUTPUT_DIRECTORY = $(BUILD)/docs/doxygen") | doxygen -
