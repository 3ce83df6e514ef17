# metadata-worker: see README.md.
#   make            build build/metadata-worker
#   make asan       the same and the unit tests under AddressSanitizer + UBSan, in build/asan/
#   make unit       build and run the unit tests (cmocka; no services)
#   make check      the unit tests and the command-line tests (tests/cli): no services, < 1 min
#   make test       install what is missing, then everything (tests/run-all.sh, what .ci/run
#                   calls): unit, fuzz (90 s batch, 60 s API), command line, end-to-end, reliability, compose,
#                   `make run` and benchmark smokes, normal and asan; about 12 minutes
#   make fuzz       fuzz batch_decode for FUZZ_SECONDS (default 60) under ASan + UBSan;
#                   FUZZ_TARGET=api: the API's request path and keys file instead
#   make run        install what is missing, start a local stack, run the worker on it
#   make bench      the benchmark (see docs/benchmarks.md)
#   make soak       an hour under load with worker and PostgreSQL restarts (tests/soak/soak.py;
#                   SOAK_MINUTES etc., see docs/benchmarks.md "Soak"); not part of make test
#   make deps       install the Debian packages of deps/packages.txt and Kafka's jars
#
# A build folder B (build/, build/asan/, build/fuzz/) holds obj/ (objects and their generated
# header dependencies, .d), libmwcore.a (the pure core), metadata-worker and tests/.

PKGS       := rdkafka libpq json-c uuid libmicrohttpd gnutls
CORE_PKGS  := json-c uuid gnutls
B          ?= build
PY         ?= /usr/bin/python3
WARN       := -Wall -Wextra -Wpedantic -Wshadow -Wformat=2 -Werror
CFLAGS     ?= -O2 -g
VERSION    := $(shell git describe --always --dirty 2>/dev/null || echo dev)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
ALL_CFLAGS  = -std=c11 -D_DEFAULT_SOURCE -pthread -DMW_VERSION='"$(VERSION)"' $(WARN) $(CFLAGS) \
              $(SAN_CFLAGS) $(PKG_CFLAGS) -I$(B)/gen -Iworker
DEPFLAGS   := -MMD -MP
LDLIBS     := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CORE_LIBS  := $(shell pkg-config --libs $(CORE_PKGS) 2>/dev/null)
CMOCKA     := $(shell pkg-config --libs cmocka 2>/dev/null)
SAN_FLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CC    ?= clang

# The pure core (no I/O; json-c, uuid and gnutls's SHA-256 only), one static library linked by
# the worker, the unit tests and the fuzz target.
CORE_SRC   := $(wildcard common/*.c) worker/batch.c worker/plan.c worker/result.c \
              worker/config.c worker/sqlstate.c worker/apikeys.c worker/api_request.c
# The worker's I/O modules: every other worker/*.c but main.c, so a new module needs no edit.
IO_SRC     := $(filter-out worker/main.c $(CORE_SRC),$(wildcard worker/*.c))
UNIT_TESTS := $(basename $(notdir $(wildcard tests/unit/test_*.c)))
FUZZ_SRC   := tests/fuzz/fuzz_batch.c tests/fuzz/ref_decode.c tests/fuzz/fuzz_api.c
FUZZ_TARGETS := fuzz_batch fuzz_api

obj         = $(patsubst %.c,$(B)/obj/%.o,$(1))
CORE_LIB   := $(B)/libmwcore.a
CORE_OBJ   := $(call obj,$(CORE_SRC))
IO_OBJ     := $(call obj,$(IO_SRC)) $(B)/obj/gen/schemas.o
TEST_OBJ   := $(call obj,$(addprefix tests/unit/,$(addsuffix .c,$(UNIT_TESTS))))
FUZZ_OBJ   := $(call obj,$(FUZZ_SRC))

.PHONY: all asan unit unit-build check fuzz fuzz-build fuzz-target test run bench soak clean deps
# Objects reached through pattern rules only (the tests') are kept, not deleted as intermediate.
.SECONDARY:

all: $(B)/metadata-worker

$(B)/metadata-worker: $(B)/obj/worker/main.o $(IO_OBJ) $(CORE_LIB)
	@echo "  LINK $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(CORE_LIB): $(CORE_OBJ)
	@echo "  AR   $@"
	@rm -f $@
	@$(AR) rcs $@ $^

# Header dependencies come from the compiler (-MMD -MP, the .d files included below); an
# edited Makefile rebuilds everything.
$(B)/obj/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	@echo "  CC   $@"
	@$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/gen/schemas.c: schemas/embed.sh $(sort $(wildcard schemas/[0-9]*.sql))
	@mkdir -p $(dir $@)
	sh schemas/embed.sh $(sort $(wildcard schemas/[0-9]*.sql)) > $@

$(B)/obj/gen/schemas.o: $(B)/gen/schemas.c Makefile
	@mkdir -p $(dir $@)
	@echo "  CC   $@"
	@$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c -o $@ $<

# A unit test links the core library, json-c/uuid and cmocka only. One that needs more names
# it, e.g. `$(B)/tests/test_x: $(B)/obj/worker/x.o` and `$(B)/tests/test_x: TEST_LIBS = $(LDLIBS)`.
$(B)/tests/%: $(B)/obj/tests/unit/%.o $(CORE_LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $^ $(TEST_LIBS) $(CORE_LIBS) $(CMOCKA)

# The lane and flight tests run the real ingest modules on fakes at their edges: the database
# is tests/unit/fake_db.c (instead of worker/db.c), Kafka librdkafka's in-process mock cluster.
INGEST_TEST_SRC := worker/lane.c worker/txn.c worker/flight.c worker/pending.c \
                   worker/partitions.c worker/flow.c worker/metrics.c worker/kafka.c \
                   tests/unit/fake_db.c tests/unit/ingest_fixture.c
INGEST_TESTS    := $(B)/tests/test_lane $(B)/tests/test_flight
$(INGEST_TESTS): $(call obj,$(INGEST_TEST_SRC))
# The core library again after the modules that use it (an archive is searched in order).
$(INGEST_TESTS): TEST_LIBS = $(CORE_LIB) $(shell pkg-config --libs rdkafka 2>/dev/null)
# worker/kafka's classification of librdkafka's errors (kafka_refusal) needs librdkafka (and
# the core library again after kafka.o, for the logger).
$(B)/tests/test_kafka: $(B)/obj/worker/kafka.o
$(B)/tests/test_kafka: TEST_LIBS = $(CORE_LIB) $(LDLIBS)

asan:
	$(MAKE) B=build/asan SAN_CFLAGS="$(SAN_FLAGS)" CFLAGS="-O1 -g" all unit-build

unit-build: $(addprefix $(B)/tests/,$(UNIT_TESTS))

unit: unit-build
	@for t in $(addprefix $(B)/tests/,$(UNIT_TESTS)); do echo "== $$t"; ./$$t || exit 1; done

check: all unit
	@echo "== command line (tests/cli)"
	@MW_BIN="$(abspath $(B)/metadata-worker)" $(PY) -m unittest discover -s tests/cli -p 'test_*.py'

# The libFuzzer targets build/fuzz/fuzz_batch (batch_decode) and build/fuzz/fuzz_api (the
# API's request path, worker/api_request.c, and the keys file): the same core library, built
# with clang under ASan + UBSan with coverage instrumentation (fuzzer-no-link); libFuzzer's
# main is linked into the targets only. tests/fuzz/build.sh (make fuzz-build) installs
# clang, then runs this.
fuzz-target:
	@$(MAKE) B=build/fuzz CC="$(FUZZ_CC)" CFLAGS="-O1 -g" \
	  SAN_CFLAGS="$(SAN_FLAGS) -fsanitize=fuzzer-no-link" $(addprefix build/fuzz/,$(FUZZ_TARGETS))

$(FUZZ_OBJ): ALL_CFLAGS += -Icommon -Itests/fuzz

FUZZ_LINK = @echo "  LINK $@"; $(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(CORE_LIBS)

$(B)/fuzz_batch: $(call obj,tests/fuzz/fuzz_batch.c tests/fuzz/ref_decode.c) $(CORE_LIB)
	$(FUZZ_LINK)

$(B)/fuzz_api: $(call obj,tests/fuzz/fuzz_api.c) $(CORE_LIB)
	$(FUZZ_LINK)

fuzz-build:
	bash tests/fuzz/build.sh

# FUZZ_SECONDS=3600 make fuzz for a long run; FUZZ_TARGET=api make fuzz for the API's
# target; make test runs the batch target 90 s and the API's 60 s.
fuzz:
	bash tests/fuzz/run.sh $(or $(FUZZ_TARGET),batch) $(or $(FUZZ_SECONDS),60)

deps:
	bash tests/harness/deps.sh all >/dev/null

test:
	bash tests/run-all.sh

run:
	bash tests/harness/deps.sh all >/dev/null
	$(MAKE) all
	bash tests/harness/run-local.sh

bench:
	bash tests/bench/run.sh

soak:
	bash tests/harness/deps.sh all >/dev/null
	$(MAKE) all
	$(PY) tests/soak/soak.py

clean:
	rm -rf build

-include $(patsubst %.o,%.d,$(CORE_OBJ) $(IO_OBJ) $(B)/obj/worker/main.o $(TEST_OBJ) $(FUZZ_OBJ) \
                           $(call obj,$(INGEST_TEST_SRC)))
