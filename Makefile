# Makefile - the front door of presenced. CMake does the building; this file
# only names the everyday tasks and makes sure the Debian packages are there.
#
#   make build      release build (RelWithDebInfo) in build/
#   make test       every test under ASan + UBSan in build-asan/
#   make test-tsan  the integration tests against a TSan build of presenced
#   make up / down  start / stop a local cluster (scripts/up.sh, down.sh)
#   make status     show the local cluster (scripts/status.sh)
#   make bench      the benchmark (bench/bench.sh): several minutes; writes
#                   bench/results/latest.json and the PNG plots
#   make bench-quick the same, small (under a minute), results in build/bench-quick
#   make bench-check a quick run compared with bench/results/latest.json: fails
#                   when a ratio dropped by more than 30 % (bench/bench_check.py)
#   make chaos      60 s of load under random faults (network partitions too, as
#                   root), then every node against the oracle and what a
#                   watcher per nats-server last heard of each user against get
#                   (tests/chaos/chaos.py; CHAOS_ARGS="--seed N")
#   make fuzz       the libFuzzer targets, FUZZ_SECONDS (600) each, clang build in build-fuzz/
#   make install    binaries, man pages, bash completions, the systemd unit:
#                   PREFIX (/usr/local), DESTDIR (staging root), BUILD_DIR (build)
#   make reset      clear the local cluster's presence (down, state removed, up)
#   make example-chat the example chat server (examples/chat) against make up's
#                   cluster: http://127.0.0.1:8090/ (CHAT_ADDR)
#   make compose-test compose.yaml and the Dockerfile, run with podman and
#                   podman-compose and checked from the host (docs/compose.md)
#   make clean      remove the build trees

JOBS ?= 2

# Property tests take their base seed from PD_SEED (each prints it); make
# test fixes it so that CI is reproducible: PD_SEED=<n> make test, or run a
# test binary directly, to explore other seeds.
PD_SEED ?= 1
ASAN_ENV := PD_SEED=$(PD_SEED) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
            LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp

.PHONY: all deps build test test-tsan up down status bench bench-quick bench-check clean
.PHONY: install reset example-chat
.PHONY: fuzz
.PHONY: chaos
.PHONY: compose-test

all: build

deps:
	@scripts/deps.sh

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPD_TESTS=OFF
	cmake --build build -j$(JOBS)

test: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug \
	    -DPD_ASAN=ON -DPD_UBSAN=ON -DPD_TSAN=OFF -DPD_TESTS=ON
	cmake --build build-asan -j2
	$(ASAN_ENV) ctest --test-dir build-asan --output-on-failure -j2
	$(ASAN_ENV) bash tests/fuzz/run.sh --seconds $(FUZZ_TEST_SECONDS)

# Criterion cannot start under TSan (Snaipe/Criterion#274), so the TSan
# build is of the daemon only, and the ASan-built integration tests drive it.
test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug \
	    -DPD_ASAN=OFF -DPD_UBSAN=OFF -DPD_TSAN=ON -DPD_TESTS=OFF
	cmake --build build-tsan -j2 --target presenced
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug \
	    -DPD_ASAN=ON -DPD_UBSAN=ON -DPD_TSAN=OFF -DPD_TESTS=ON
	cmake --build build-asan -j2
	$(ASAN_ENV) $(TSAN_ENV) PD_PRESENCED_BIN=$(CURDIR)/build-tsan/presenced \
	    ctest --test-dir build-asan --output-on-failure -j2 -L integration

# make install PREFIX=/usr DESTDIR=/tmp/stage: presenced in sbin/, the tools
# in bin/, man pages, bash completions, lib/systemd/system/presenced.service
# (ExecStart names the installed binary). BUILD_DIR=<dir> installs another
# build tree as it is (the test of this target does).
PREFIX ?= /usr/local
BUILD_DIR ?= build
install: $(if $(filter build,$(BUILD_DIR)),build)
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD_DIR) --prefix "$(PREFIX)"

up: build
	bash scripts/up.sh

down:
	bash scripts/down.sh

# The example chat server (examples/chat/README.md) on make up's cluster.
example-chat:
	bash examples/chat/run.sh

# make reset: down, and the state removed (JetStream, snapshots, logs);
# `make reset up` starts afresh.
reset:
	bash scripts/reset.sh

status:
	@if [ -f scripts/status.sh ]; then bash scripts/status.sh; \
	else echo "make status: scripts/status.sh does not exist yet" >&2; exit 1; fi

bench: build
	bash bench/bench.sh

bench-quick: build
	bash bench/bench.sh --quick --out build/bench-quick

# Not part of make test: it depends on the machine's speed and load.
bench-check: build
	bash bench/bench.sh --quick --out build/bench-check
	python3 bench/bench_check.py build/bench-check/latest.json --recorded bench/results/latest.json

# The chaos test (tests/chaos/chaos.py) on the release build: 60 s of load
# on three nodes, three nats-servers and Redis under random faults, then
# every node against the oracle. As root each nats-server + node pair runs in
# a network namespace of its own and partitions are among the faults
# (--no-partitions: loopback only). A watcher per nats-server checks every
# user's last notification (--no-watch: not). A random seed unless given;
# it is printed:
#   make chaos CHAOS_ARGS="--seed 7 --keep --verbose"
# make test runs a 20 s version without the watchers (ctest chaos_short).
CHAOS_ARGS ?=
chaos: build
	python3 tests/chaos/chaos.py --bin-dir build --duration 60 $(CHAOS_ARGS)

# libFuzzer targets (tests/fuzz/README.md), built with clang in build-fuzz/:
# each runs over its committed corpus, then FUZZ_SECONDS of fuzzing; findings
# land in build-fuzz/crashes/ and fail the target. make test runs the same
# for FUZZ_TEST_SECONDS per target after ctest.
FUZZ_SECONDS ?= 600
FUZZ_TEST_SECONDS ?= 20
fuzz: deps
	bash tests/fuzz/run.sh --seconds $(FUZZ_SECONDS)

# compose.yaml for real (tests/compose/compose_test.py, docs/compose.md):
# local images (cached), the project image from the Dockerfile, podman-compose
# up, checks through the published ports, down -v. make test runs it too
# (ctest compose_test). COMPOSE_ARGS="--keep" leaves a failed run up.
COMPOSE_ARGS ?=
compose-test: build
	python3 tests/compose/compose_test.py --ctl build/presencectl $(COMPOSE_ARGS)

clean:
	rm -rf build build-asan build-tsan build-fuzz
