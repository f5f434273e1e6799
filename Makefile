# mooring: `make run` builds and starts the host; `make test` builds every
# suite once under AddressSanitizer + UBSan and runs them all, replays the fuzz
# corpora and runs Cheshire Cat's own client against the binary; `make fuzz`
# fuzzes each target for FUZZ_SECONDS. Each installs the Debian 12 packages it
# needs first. ccache is used when CMAKE_CXX_COMPILER_LAUNCHER says so.

DEBIAN_PACKAGES := build-essential cmake pkg-config \
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev \
  libssl-dev libsqlite3-dev libtomlplusplus-dev libspdlog-dev libcli11-dev \
  libgtest-dev libgmock-dev libbenchmark-dev ca-certificates openssl \
  clang-19 libclang-rt-19-dev lld \
  chromium python3-prometheus-client systemd e2fsprogs

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

FUZZ_SECONDS ?= 60
FUZZ_CXX ?= clang++-19
FUZZ_BUILD := build/fuzz
INTEROP := tests/interop

.PHONY: all deps interop-deps build release run test test-asan test-tsan \
  fuzz fuzz-build fuzz-replay bench clean

all: build

# Installs only what is missing; `apt-get update` runs only when something is.
# Node.js and npm count as present when their commands are (a nodejs package
# that bundles npm conflicts with Debian's npm package).
deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	cmake --preset dev >/dev/null
	cmake --build --preset dev -j $(JOBS)

release: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS) --target mooring

run: release
	./build/release/mooring serve

# One build, under AddressSanitizer + UBSan (the `asan` preset), of the binary
# and every suite; ctest runs them all, Cheshire Cat's client (interop.ccat_api)
# included; then each fuzz target replays its corpus and regression inputs.
test: deps interop-deps
	cmake --preset asan >/dev/null
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS)
	$(MAKE) --no-print-directory fuzz-replay

test-asan: test

# The interop test's npm packages (ccat-api, pinned by package-lock.json).
interop-deps: $(INTEROP)/node_modules/.package-lock.json
$(INTEROP)/node_modules/.package-lock.json: $(INTEROP)/package.json $(INTEROP)/package-lock.json | deps
	cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error

# libFuzzer targets (fuzz/): a project of their own, built with clang.
fuzz-build: deps
	cmake -S fuzz -B $(FUZZ_BUILD) -DCMAKE_CXX_COMPILER=$(FUZZ_CXX) >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

fuzz-replay: fuzz-build
	ctest --test-dir $(FUZZ_BUILD) --output-on-failure

fuzz: fuzz-build
	fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Every suite but the browser and interop ones under ThreadSanitizer: the
# store thread and the network thread meet in the store, chat, admin and app
# layers, and the integration suite runs the real binary built with it.
SANITIZED_SUITES := mooring runtime_tests net_tests store_tests llm_tests chat_tests \
  admin_tests app_tests integration_tests
SANITIZED_TESTS := '^(runtime|net|store|llm|chat|admin|app|integration)\.'

test-tsan: deps
	cmake --preset tsan >/dev/null
	cmake --build --preset tsan -j $(JOBS) --target $(SANITIZED_SUITES)
	ctest --preset tsan -j $(JOBS) -R $(SANITIZED_TESTS)

# The benchmarks also need the FastAPI + uvicorn reference peer's packages.
bench: deps
	@missing=""; for p in python3-fastapi python3-uvicorn python3-websockets gnuplot-nox node-ws valgrind; do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	cmake --preset release -DMOORING_BUILD_BENCH=ON -DMOORING_BUILD_TESTS=ON >/dev/null
	cmake --build --preset release -j $(JOBS) --target mooring bench_admin_stop bench_llm bench_chat bench_shutdown bench_reload bench_onebot bench_idle bench_beast_idle
	./bench/run.sh

clean:
	rm -rf build
