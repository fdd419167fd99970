# Entry points for people: `make run`, `make test`, `make build`, `make bench`, `make fuzz`,
# `make soak` (SOAK_MINUTES=5: tools/soak against build/wshost, fails on a lost message).
# CMake does the building; this file installs what is missing and wraps it.
BUILD ?= build
PORT ?= 8080
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

SOAK_MINUTES ?= 5

.PHONY: all deps build run test test-asan bench fuzz soak format clean

all: build

deps:
	@tools/install-deps

$(BUILD)/Makefile: deps CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps
	@test -f $(BUILD)/Makefile || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

# The host refuses a plugins folder or file others may write (a umask of 002 makes them so).
run: build
	mkdir -p data
	chmod go-w plugins plugins/*.so
	$(BUILD)/wshost --port $(PORT) --plugins plugins --db data/wshost.db

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite again, built with AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan: deps
	@test -f build-asan/Makefile || cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWSHOST_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

bench: build
	tools/bench/run

fuzz: deps
	tools/fuzz/run $(FUZZ_SECONDS)

soak: build
	tools/soak --minutes $(SOAK_MINUTES) --bin $(BUILD)/wshost

format:
	clang-format -i host/*.c host/*.h sdk/include/*.h plugins/*.c tests/unit/*.c tests/plugins/*.c tools/*.c

clean:
	rm -rf $(BUILD) build-asan build-fuzz plugins/*.so
