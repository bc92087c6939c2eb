# The two entry points of README.md. Everything else is plain CMake (see CMakePresets.json).
#   make run   - install missing packages, build Release, run the main job on the embedded model
#   make test  - install missing packages, build, run the tests (CTest label cpu; the gpu-labelled
#                ones among them skip, saying why, without a CUDA device), then the gpu-labelled
#                tests once more on the CPU emulator of the CUDA backend (make test-emulated)
BUILD ?= build
JOBS ?= $(shell nproc)
MODEL ?= models/tiny-mixtral
# The main job: tune the embedded model under a default goal (about 3 minutes on 2 cores).
TUNE_OBJECTIVE ?= min latency
TUNE_CONSTRAINT ?= ppl <= 1.05*base
TUNE_MINUTES ?= 3
TUNE_DB ?= $(BUILD)/moenav-results.db

EMULATED_BUILD ?= build-emulated
EMULATED_TESTS = test_cuda_ops test_cuda_experts test_cuda_dequantize test_cuda_emulator test_cuda_engine test_cuda_architectures

.PHONY: setup build run test test-emulated clean

setup:
	@scripts/setup.sh

build: setup
	@cmake --preset release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/moenav generate $(MODEL) -p " The history of the city" -n 48
	$(BUILD)/moenav tune $(MODEL) --objective "$(TUNE_OBJECTIVE)" --constraint "$(TUNE_CONSTRAINT)" \
		--budget-minutes $(TUNE_MINUTES) --db $(TUNE_DB) -o $(BUILD)/tuned.json --report $(BUILD)/tune-report.html
	@echo "run: recommended config in $(BUILD)/tuned.json (try: $(BUILD)/moenav bench $(MODEL) --config $(BUILD)/tuned.json);" \
		"report in $(BUILD)/tune-report.html (rebuild: $(BUILD)/moenav report --db $(TUNE_DB) -o $(BUILD)/tune-report.html)"

test: build
	cd $(BUILD) && ctest -L cpu --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory test-emulated

# The CUDA backend built as C++ against tests/cuda_emulator and its gpu-labelled tests run on the
# CPU: kernels, the decoder and the expert cache checked against the CPU reference without a GPU.
test-emulated: setup
	@cmake --preset cuda-emulated >/dev/null
	@cmake --build $(EMULATED_BUILD) -j $(JOBS) --target $(EMULATED_TESTS)
	cd $(EMULATED_BUILD) && ctest -L gpu --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) $(EMULATED_BUILD)
