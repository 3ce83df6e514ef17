# metadata-worker: see README.md.
#   make            build build/metadata-worker
#   make asan       the same under AddressSanitizer + UBSan, in build/asan/
#   make test       install what is missing, then unit + end-to-end tests, normal and asan
#   make run        install what is missing, start a local stack, run the worker on it
#   make bench      the benchmark (see README "Performance")

PKGS      := rdkafka libpq json-c uuid libmicrohttpd
B         ?= build
WARN      := -Wall -Wextra -Wpedantic -Wshadow -Wformat=2 -Werror
CFLAGS    ?= -O2 -g
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
ALL_CFLAGS = -std=c11 -D_DEFAULT_SOURCE -pthread -DMW_VERSION='"$(VERSION)"' $(WARN) $(CFLAGS) $(SAN_CFLAGS) \
             $(shell pkg-config --cflags $(PKGS)) -I$(B)/gen -Iworker
LDLIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA    := $(shell pkg-config --libs cmocka 2>/dev/null)
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

COMMON_SRC := common/jsoncheck.c common/log.c common/jsonw.c common/utf8.c common/config.c common/sqlstate.c
CORE_SRC   := worker/batch.c worker/plan.c worker/result.c
IO_SRC     := worker/db.c worker/kafka.c worker/ingest.c worker/pending.c worker/partitions.c worker/flow.c worker/txn.c worker/lane.c worker/flight.c worker/metrics.c worker/http.c
LIB_OBJ    := $(patsubst %.c,$(B)/obj/%.o,$(COMMON_SRC) $(CORE_SRC) $(IO_SRC)) $(B)/obj/gen/schemas.o
UNIT_TESTS := test_utf8 test_batch test_plan test_result test_config test_sqlstate

.PHONY: all asan unit unit-build fuzz fuzz-build test run bench clean deps stack-stop
all: $(B)/metadata-worker

$(B)/metadata-worker: $(B)/obj/worker/main.o $(LIB_OBJ)
	@echo "  LINK $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/obj/%.o: %.c $(wildcard common/*.h worker/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC   $@"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/gen/schemas.c: schemas/embed.sh $(sort $(wildcard schemas/[0-9]*.sql))
	@mkdir -p $(dir $@)
	sh schemas/embed.sh $(sort $(wildcard schemas/[0-9]*.sql)) > $@

$(B)/obj/gen/schemas.o: $(B)/gen/schemas.c worker/schemas.h
	@mkdir -p $(dir $@)
	@echo "  CC   $@"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LINK $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS) $(CMOCKA)

asan:
	$(MAKE) B=build/asan SAN_CFLAGS="$(SAN_FLAGS)" CFLAGS="-O1 -g" all $(addprefix build/asan/tests/,$(UNIT_TESTS))

unit-build: $(addprefix $(B)/tests/,$(UNIT_TESTS))

unit: unit-build
	@for t in $(addprefix $(B)/tests/,$(UNIT_TESTS)); do echo "== $$t"; ./$$t || exit 1; done

fuzz-build:
	bash tests/fuzz/build.sh

# FUZZ_SECONDS=3600 make fuzz for a long run; make test runs 120 s.
fuzz:
	bash tests/fuzz/run.sh $(or $(FUZZ_SECONDS),60)

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

clean:
	rm -rf build
