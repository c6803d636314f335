# The two commands that do everything on a fresh Debian 12 machine:
#   make bench   install deps, build release, run the bench suite
#   make test    install deps, build debug, run every test through ctest
# Other targets: build, asan, tsan, format, tidy, install, clean.

JOBS   ?= $(shell nproc)
PRESET ?= debug
QUICK  ?=
export QUICK

.PHONY: all deps build test bench asan tsan format tidy install clean

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

format:
	git ls-files '*.h' '*.cc' | xargs clang-format -i

tidy: build
	git ls-files 'core/*.cc' 'net/*.cc' 'heartbeat/*.cc' | xargs clang-tidy -p build/$(PRESET) --quiet

install: build
	cmake --install build/$(PRESET) --prefix $(or $(PREFIX),/usr/local)

clean:
	rm -rf build
