# The two entry points of README.md. Everything else is plain CMake (see CMakePresets.json).
#   make run   - install missing packages, build Release, run the main job on the embedded model
#   make test  - install missing packages, build, run the tests (CTest label cpu)
BUILD ?= build
JOBS ?= $(shell nproc)
MODEL ?= models/tiny-mixtral

.PHONY: setup build run test clean

setup:
	@scripts/setup.sh

build: setup
	@cmake --preset cpu-release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/moenav generate $(MODEL) -p " The history of the city" -n 48
	$(BUILD)/moenav bench $(MODEL) --prompt-tokens 512 --gen-tokens 128 --reps 3

test: build
	cd $(BUILD) && ctest -L cpu --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD)
