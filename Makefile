# funneld — see README.md.  `make` builds, `make check` runs every test,
# `make demo` runs the whole path end to end, `make bench` compares peers.

PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR  ?= $(PREFIX)/share/doc/funneld

VERSION := 0.1.0
BUILD   ?= build
CC      ?= cc
SANITIZE ?=
comma := ,

PKGS     := libevent libevent_pthreads libsystemd inih
WARN     := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS   ?= -O2 -g
CPPFLAGS += -D_GNU_SOURCE -DFUNNELD_VERSION='"$(VERSION)"' -Ifunneld
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(shell pkg-config --cflags $(PKGS))
LDLIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lmbedtls -lmbedx509 -lmbedcrypto -lpthread

ifneq ($(SANITIZE),)
BUILD := build-$(subst $(comma),-,$(SANITIZE))
ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

DAEMON_SRCS := $(wildcard funneld/*.c)
LIB_SRCS    := $(filter-out funneld/main.c,$(DAEMON_SRCS))
DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS    := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB         := $(BUILD)/libfunneld.a
UNIT_SRCS   := $(wildcard tests/unit/test_*.c)
UNIT_BINS   := $(UNIT_SRCS:%.c=$(BUILD)/%)
TOOL_SRCS   := $(wildcard tests/tools/*.c)
TOOL_BINS   := $(TOOL_SRCS:%.c=$(BUILD)/%)
FUZZ_SRCS   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY := $(FUZZ_SRCS:%.c=$(BUILD)/%-replay)
FUZZ_BINS   := $(FUZZ_SRCS:tests/fuzz/%.c=build-fuzz/%)

.PHONY: all deps check unit integration fuzz fuzz-replay demo demo-keep bench install clean lint soak

all: $(BUILD)/funneld $(TOOL_BINS)

$(BUILD)/obj/%.o: %.c $(wildcard funneld/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/funneld: $(BUILD)/obj/funneld/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lcmocka

$(BUILD)/tests/tools/%: tests/tools/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# Fuzz targets built with a plain main() that replays files: runs in `make check`.
$(BUILD)/tests/fuzz/%-replay: tests/fuzz/%.c tests/fuzz/replay_main.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/replay_main.c $(LIB) $(LDLIBS)

# libFuzzer builds (clang), for `make fuzz`.
build-fuzz/%: tests/fuzz/%.c $(LIB_SRCS)
	@mkdir -p build-fuzz
	clang $(CPPFLAGS) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined $(shell pkg-config --cflags $(PKGS)) -o $@ $< $(LIB_SRCS) $(LDLIBS)

deps:
	@scripts/deps

check: deps
	$(MAKE) all $(UNIT_BINS) $(FUZZ_REPLAY)
	BUILD=$(BUILD) python3 tests/run.py

unit: $(UNIT_BINS)
	BUILD=$(BUILD) python3 tests/run.py --only unit

integration: all
	BUILD=$(BUILD) python3 tests/run.py --only integration

FUZZ_SECONDS ?= 60
fuzz: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p build-fuzz/corpus/$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/$$n tests/fuzz/corpus/$$n 2>&1 | \
	    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|#[0-9]+ *DONE|==[0-9]+==ERROR)' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; done

demo: deps all
	scripts/demo

demo-keep: deps all
	scripts/demo --keep

bench: deps all
	bench/run

lint:
	scripts/lint

install: $(BUILD)/funneld
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DOCDIR)
	install -d -m 750 $(DESTDIR)$(SYSCONFDIR)/funneld
	install -m 755 $(BUILD)/funneld $(DESTDIR)$(SBINDIR)/funneld
	install -m 644 man/funneld.8 $(DESTDIR)$(MANDIR)/man8/funneld.8
	install -m 644 man/funneld.conf.5 $(DESTDIR)$(MANDIR)/man5/funneld.conf.5
	sed 's|@SBINDIR@|$(SBINDIR)|g' systemd/funneld.service > $(DESTDIR)$(UNITDIR)/funneld.service
	chmod 644 $(DESTDIR)$(UNITDIR)/funneld.service
	install -m 644 systemd/funneld.socket $(DESTDIR)$(UNITDIR)/funneld.socket
	install -m 644 conf/funneld.sysusers $(DESTDIR)$(SYSUSERSDIR)/funneld.conf
	install -m 644 conf/funneld.tmpfiles $(DESTDIR)$(TMPFILESDIR)/funneld.conf
	install -m 644 funneld.conf.example $(DESTDIR)$(DOCDIR)/funneld.conf.example
	test -e $(DESTDIR)$(SYSCONFDIR)/funneld/funneld.conf || \
	  install -m 640 funneld.conf.example $(DESTDIR)$(SYSCONFDIR)/funneld/funneld.conf
	@echo "installed; then: systemd-sysusers funneld.conf && systemd-tmpfiles --create funneld.conf && systemctl daemon-reload"

clean:
	rm -rf build build-* bench/results/*.tmp
