# The two commands that do everything on a fresh Debian 12 machine:
#   make bench   install deps, build release, run the bench suite
#   make test    install deps, build debug, run every test through ctest
# Other targets: build, asan, tsan, fuzz, leakcheck, format, tidy, install, package, clean.
#   make package [PRESET=release]  a .deb (libkeel-dev) in build/$(PRESET)/ (CPack)
#   make fuzz [FUZZ_SECONDS=20]   libFuzzer targets (preset fuzz), each run FUZZ_SECONDS
#   make leakcheck                the examples under valgrind (debug build)

JOBS   ?= $(shell nproc)
PRESET ?= debug
QUICK  ?=
export QUICK

.PHONY: all deps build test bench asan tsan fuzz leakcheck format tidy install package clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake --preset $(PRESET) >/dev/null
	cmake --build --preset $(PRESET) -j $(JOBS)

test: deps
	cmake --preset $(PRESET) >/dev/null
	cmake --build --preset $(PRESET) -j $(JOBS)
	ctest --preset $(PRESET) -j $(JOBS)

bench: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)
	bash scripts/bench.sh build/release

asan:
	$(MAKE) test PRESET=asan

tsan:
	$(MAKE) test PRESET=tsan

FUZZ_SECONDS ?= 20
fuzz: deps
	JOBS=$(JOBS) bash scripts/fuzz.sh $(FUZZ_SECONDS)

leakcheck: deps
	cmake --preset debug >/dev/null
	cmake --build --preset debug -j $(JOBS)
	bash scripts/leakcheck.sh build/debug

format:
	git ls-files '*.h' '*.cc' | xargs clang-format -i

tidy: build
	git ls-files 'core/*.cc' 'net/*.cc' 'heartbeat/*.cc' | xargs clang-tidy -p build/$(PRESET) --quiet

install: build
	cmake --install build/$(PRESET) --prefix $(or $(PREFIX),/usr/local)

# Only the library is built: the package holds the library, the headers,
# the CMake package and keel.pc, none of the tests or examples.
package: PRESET = release
package: deps
	cmake --preset $(PRESET) >/dev/null
	cmake --build --preset $(PRESET) -j $(JOBS) --target keel
	cd build/$(PRESET) && cpack -G DEB

clean:
	rm -rf build
