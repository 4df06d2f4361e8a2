# Two commands a new user needs: `make demo` and `make test`. Each installs missing Debian
# packages (tools/install_deps.sh), configures a Release build in build/ and builds.
BUILD   ?= build
JOBS    ?= $(shell nproc)
PYTHON  ?= /usr/bin/python3
WERROR  ?= $(if $(CI),ON,OFF)
CMAKE_FLAGS ?=

.PHONY: deps configure build test demo bench docs clean

deps:
	@tools/install_deps.sh all

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON) \
	  -DSPARSEBUDGET_WERROR=$(WERROR) -DSPARSEBUDGET_BUILD_PYTHON=ON $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

demo: configure
	@cmake --build $(BUILD) -j $(JOBS) --target demo

bench: build
	@cmake --build $(BUILD) --target bench

clean:
	rm -rf $(BUILD)

docs: deps
	@mkdir -p $(BUILD)/docs && doxygen Doxyfile
