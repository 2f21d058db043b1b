# mxgate - edge MX relay appliance.
#
#   make              build bin/mxgate
#   make run          install what is missing, build, start the appliance on its defaults
#   make check        install what is missing, build, run unit and integration tests
#   make check SANITIZE=1   the same under ASan + UBSan (objects in build/san)
#   make unit | make integration   one half of the suite
#   make docs         regenerate docs/configuration.md and conf/mxgate.conf from the settings table
#   make bench        mxgate side by side with Postfix on this machine (docs/performance.md)

PKGS     := libevent libevent_openssl libevent_pthreads hiredis openssl libcrypt libcares jansson \
            ldap libcurl opendkim milter
CC       ?= cc
OPT      ?= -O2
CFLAGS   := -std=c11 -Wall -Wextra -Werror -g $(OPT) -D_GNU_SOURCE -MMD -MP \
            -Ilib -Iedge -Irelay -Ifilters -Imailbox-bridge -Iops
LDLIBS   := -lspf2 -lpthread

ifeq ($(SANITIZE),1)
BUILD    := build/san
BIN      := build/san/mxgate
CFLAGS   += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=address,undefined
else
BUILD    := build/rel
BIN      := bin/mxgate
endif

# pkg-config runs only when building (not for `make deps`), since the packages may be missing yet.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))

SRCS      := $(wildcard lib/*.c edge/*.c relay/*.c filters/*.c mailbox-bridge/*.c ops/*.c)
MAIN      := ops/mxgate.c
LIB_OBJS  := $(patsubst %.c,$(BUILD)/%.o,$(filter-out $(MAIN),$(SRCS)))
MAIN_OBJ  := $(BUILD)/ops/mxgate.o
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_SUPPORT := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/unit/support/*.c))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))

PYTEST   ?= pytest-3

.PHONY: all deps test-deps run check unit integration docs clean
# The unit tests' support objects are kept, not deleted as intermediate files after each link.
.SECONDARY: $(UNIT_SUPPORT)
all: $(BIN)

deps:
	@scripts/install-deps

test-deps:
	@scripts/install-deps --test

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/libmxgate.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(MAIN_OBJ) $(BUILD)/libmxgate.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(UNIT_SUPPORT) $(BUILD)/libmxgate.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(UNIT_SUPPORT) $(BUILD)/libmxgate.a \
	    $(PKG_LIBS) $(shell pkg-config --libs cmocka) $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	$(BIN) run

check: test-deps
	@$(MAKE) --no-print-directory unit integration

unit: $(BIN) $(UNIT_BINS)
	@scripts/run-unit $(UNIT_BINS)

integration: $(BIN)
	MXGATE_BIN=$(abspath $(BIN)) $(PYTEST) -q -p no:cacheprovider tests/integration

docs: $(BIN)
	$(BIN) config reference > docs/configuration.md
	$(BIN) config sample > conf/mxgate.conf

# BENCH_QUICK=1 for a short run; the other BENCH_* settings are in scripts/bench.
.PHONY: bench
bench: test-deps
	@$(MAKE) --no-print-directory $(BIN)
	MXGATE_BIN=$(abspath $(BIN)) scripts/bench

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
