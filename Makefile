# mooring: `make run` builds and starts the host; `make test` builds and runs
# every test. Both install the Debian 12 packages they need first.

DEBIAN_PACKAGES := build-essential cmake pkg-config \
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev \
  libssl-dev libsqlite3-dev libtomlplusplus-dev libspdlog-dev libcli11-dev \
  libgtest-dev libgmock-dev libbenchmark-dev ca-certificates openssl

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build release run test test-asan test-tsan bench clean

all: build

# Installs only what is missing; `apt-get update` runs only when something is.
deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
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

test: build
	ctest --preset dev -j $(JOBS)
	$(MAKE) --no-print-directory test-asan

# The runtime, network and admin suites again under AddressSanitizer + UBSan.
SANITIZED_SUITES := runtime_tests net_tests admin_tests
SANITIZED_TESTS := '^(runtime|net|admin)\.'

test-asan: deps
	cmake --preset asan >/dev/null
	cmake --build --preset asan -j $(JOBS) --target $(SANITIZED_SUITES)
	ctest --preset asan -j $(JOBS) -R $(SANITIZED_TESTS)

test-tsan: deps
	cmake --preset tsan >/dev/null
	cmake --build --preset tsan -j $(JOBS) --target $(SANITIZED_SUITES)
	ctest --preset tsan -j $(JOBS) -R $(SANITIZED_TESTS)

# The benchmarks also need the FastAPI + uvicorn reference peer's packages.
bench: deps
	@dpkg-query -W -f='$${Status}' python3-fastapi 2>/dev/null | grep -q "install ok installed" || \
	  (DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    python3-fastapi python3-uvicorn python3-websockets)
	cmake --preset release -DMOORING_BUILD_BENCH=ON -DMOORING_BUILD_TESTS=ON >/dev/null
	cmake --build --preset release -j $(JOBS) --target mooring bench_admin_stop bench_llm bench_chat bench_shutdown bench_reload
	./bench/run.sh

clean:
	rm -rf build
