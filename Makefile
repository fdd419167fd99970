# Entry points for people: `make run`, `make test`, `make build`, `make bench`, `make fuzz`,
# `make soak` (SOAK_MINUTES=5: tools/soak against build/wshost, fails on a lost message).
# CMake does the building; this file installs what is missing and wraps it. Each entry point
# installs only its own set of packages (tools/install-deps build|run|test|bench): a machine
# without chromium or prometheus still builds and runs; `make test` adds the test tools.
BUILD ?= build
PORT ?= 8080
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local
DEB_OUT ?= $(BUILD)

SOAK_MINUTES ?= 5

.PHONY: all deps deps-run deps-test deps-bench build build-test run test test-redis test-isolation test-asan test-tsan bench fuzz soak format clean install deb

all: build

deps:
	@tools/install-deps build
deps-run:
	@tools/install-deps run
deps-test:
	@tools/install-deps test
deps-bench:
	@tools/install-deps bench

build: deps
	@test -f $(BUILD)/Makefile || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

# The test set may have just brought cmocka: configure again so the unit tests are built.
build-test: deps-test
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# The host refuses a plugins folder or file others may write (a umask of 002 makes them so).
run: deps-run build
	mkdir -p data
	chmod go-w plugins plugins/*.so
	$(BUILD)/wshost --port $(PORT) --plugins plugins --db data/wshost.db

test: build-test
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole end-to-end suite again with --isolation process (functions in worker processes);
# CI runs it beside `make test`. The .deb test is about the package, not the mode (and takes a
# minute): `make test` runs it, in a throwaway root.
# The end-to-end suite again with every host in a cluster on one redis-server (--redis).
test-redis: build-test
	cd $(BUILD) && WSHOST_E2E_REDIS=1 ctest --output-on-failure -j $(JOBS) -R '^e2e\.' -E 'e2e.test_deb$$'

test-isolation: build-test
	cd $(BUILD) && WSHOST_E2E_ISOLATION=1 ctest --output-on-failure -j $(JOBS) -R '^e2e\.' -E 'e2e.test_deb$$'

# The whole suite again, built with AddressSanitizer and UndefinedBehaviorSanitizer. Not the
# .deb test: a package of an instrumented build is nothing anyone ships.
test-asan: deps-test
	@test -f build-asan/Makefile || cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWSHOST_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS) -E 'e2e.test_deb$$'

# cmake --install into PREFIX (DESTDIR=... stages it, as packagers do). See docs/OPERATIONS.md
# "Deploying".
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# The Debian package (CPack): $(DEB_OUT)/wshost_<version>_<arch>.deb.
deb: build
	cd $(BUILD) && cpack -G DEB -B $(abspath $(DEB_OUT))
	@ls $(abspath $(DEB_OUT))/wshost_*.deb

# The tests whose plugins call the host from threads of their own, under ThreadSanitizer.
test-tsan: deps-test
	@test -f build-tsan/Makefile || cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DWSHOST_TSAN=ON
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -j $(JOBS) -R 'e2e.test_(rooms|defer|timers|chat)$$'

bench: deps-bench build
	tools/bench/run

fuzz: deps-test
	tools/fuzz/run $(FUZZ_SECONDS)

soak: deps-test build
	tools/soak --minutes $(SOAK_MINUTES) --bin $(BUILD)/wshost

format:
	clang-format -i host/*.c host/*.h host/*/*.c host/*/*.h sdk/include/*.h plugins/*.c tests/unit/*.c tests/plugins/*.c tools/*.c

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz plugins/*.so
