# wsproxy -- GNU make build. `make` builds, `make run` sets up and runs, `make test` sets up and tests.
# Every proxy/*.c and proxy/*/*.c (but main.c) and store/*.c goes into one static library that the
# server, wsctl and every unit test link against, so adding a module needs no edit here.

CC      ?= gcc
B       ?= build
PKGS    := libevent libevent_openssl openssl sqlite3 jansson libjwt inih zlib libpq liburing

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wwrite-strings \
           -Wformat=2 -Wundef -fno-common
CSTD    := -std=c11 -D_GNU_SOURCE
OPT     ?= -O2 -g
SAN     ?=
ifeq ($(SAN),1)
  OPT     := -O1 -g -fno-omit-frame-pointer
  SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
endif
ifeq ($(DEVELOPER),1)
  WARN += -Werror
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  := $(CSTD) $(OPT) $(WARN) $(SANFLAGS) -Iproxy -Istore -I$(B)/gen $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := $(SANFLAGS) $(EXTRA_LDFLAGS)
LDLIBS  := $(PKG_LIBS) -lm

LIB_SRC  := $(filter-out proxy/main.c,$(wildcard proxy/*.c proxy/*/*.c)) $(wildcard store/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(B)/obj/%.o) $(B)/gen/migrations.o
WSCTL_SRC := $(wildcard wsctl/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
MIGRATIONS := $(sort $(wildcard migrations/*.sql))
MIGRATIONS_PG := $(sort $(wildcard migrations/pg/*.sql))

.PHONY: all run test unit clean deps bench soak fuzz docs
all: $(B)/wsproxy $(if $(WSCTL_SRC),$(B)/wsctl)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# migrations/*.sql are compiled into the binary so an installed wsproxy carries its own schema.
# The list of files is a prerequisite too (rewritten only when it changes): a migration removed,
# by a checkout or a revert, must not stay embedded from an earlier build.
MIG_LIST := $(B)/gen/migrations.list
$(shell mkdir -p $(B)/gen && { echo '$(MIGRATIONS) $(MIGRATIONS_PG)' | cmp -s - $(MIG_LIST) || \
    echo '$(MIGRATIONS) $(MIGRATIONS_PG)' > $(MIG_LIST); })
$(B)/gen/migrations.c: $(MIGRATIONS) $(MIGRATIONS_PG) $(MIG_LIST) scripts/embed-migrations.sh
	@mkdir -p $(dir $@)
	sh scripts/embed-migrations.sh wsp_migrations $(MIGRATIONS) > $@.tmp
	sh scripts/embed-migrations.sh wsp_pg_migrations $(MIGRATIONS_PG) | sed 1,2d >> $@.tmp
	mv $@.tmp $@

$(B)/gen/migrations.o: $(B)/gen/migrations.c
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libwsp.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(B)/wsproxy: $(B)/obj/proxy/main.o $(B)/libwsp.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/wsctl: $(WSCTL_SRC:%.c=$(B)/obj/%.o) $(B)/libwsp.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: $(B)/obj/tests/unit/%.o $(B)/libwsp.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

unit: $(UNIT_BIN)
	@bash scripts/run-unit.sh $(UNIT_BIN)

# Full setup + every test (unit, integration, then both again under ASan+UBSan). README's test command.
test:
	@bash scripts/test.sh

# Set up and run the server on the example config (loopback, SQLite under var/). README's run command.
run:
	@bash scripts/deps.sh run
	@$(MAKE) --no-print-directory all
	@mkdir -p var
	@echo "admin CLI for this server (another terminal): ./$(B)/wsctl -c wsproxy.example.ini sessions"
	./$(B)/wsproxy --config wsproxy.example.ini

deps:
	@bash scripts/deps.sh test

bench:
	@bash tests/bench/run.sh

soak:
	@bash tests/soak/run.sh

fuzz:
	@bash tests/fuzz/run.sh

docs: $(B)/wsproxy
	sh scripts/gen-config-doc.sh $(B)/wsproxy > docs/config.md

clean:
	rm -rf build var/bench

-include $(shell find $(B) -name '*.d' 2>/dev/null)
