# funneld — see README.md.  `make` builds, `make check` runs every test,
# `make demo` runs the whole path end to end, `make bench` compares peers.
#
# Package flags (pkg-config) are read once, when make reads this file.  The
# targets that install packages first (demo, check, bench, valgrind, fuzz, ...:
# scripts/deps) therefore build through a second make, started after the
# install, which reads them again.  A plain `make` installs nothing: it names
# the missing packages (scripts/deps --check build) before compiling.

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
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(PKG_CFLAGS)
LDLIBS   := $(PKG_LIBS) -lmbedtls -lmbedx509 -lmbedcrypto -lpthread

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

.PHONY: all deps deps-build deps-demo deps-test build-deps-check check unit integration fuzz fuzz-run \
	demo demo-keep bench install clean lint soak valgrind valgrind-run

all: $(BUILD)/funneld $(BUILD)/funneld-faults $(TOOL_BINS)

# Before anything compiles: the build packages are there, or say which are not.
build-deps-check:
	@scripts/deps --check build

$(BUILD)/obj/%.o: %.c $(wildcard funneld/*.h) | build-deps-check
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/funneld: $(BUILD)/obj/funneld/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The same daemon with the test-only fault points of funneld/fault.h armed
# (FUNNELD_FAULT=name,...): only the files that include fault.h differ.
FAULT_SRCS := $(shell grep -l '"fault.h"' $(DAEMON_SRCS))
FAULT_OBJS := $(FAULT_SRCS:%.c=$(BUILD)/obj-faults/%.o)
$(BUILD)/obj-faults/%.o: %.c $(wildcard funneld/*.h) | build-deps-check
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFUNNELD_FAULTS $(ALL_CFLAGS) -c -o $@ $<
$(BUILD)/funneld-faults: $(BUILD)/obj/funneld/main.o $(FAULT_OBJS) $(filter-out $(FAULT_SRCS:%.c=$(BUILD)/obj/%.o),$(LIB_OBJS))
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c tests/unit/sockaddr_test.h $(LIB) | build-deps-check
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lcmocka

$(BUILD)/tests/tools/%: tests/tools/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# Fuzz targets built with a plain main() that replays files: runs in `make check`.
$(BUILD)/tests/fuzz/%-replay: tests/fuzz/%.c tests/fuzz/replay_main.c tests/fuzz/fuzz.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/replay_main.c $(LIB) $(LDLIBS)

# libFuzzer builds (clang), for `make fuzz`: the library once, instrumented for
# coverage, ASan and UBSan, as an archive (a target links only what it uses),
# then one binary per target.
FUZZ_CFLAGS   := -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
                 -fno-sanitize-recover=all $(PKG_CFLAGS)
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=build-fuzz/obj/%.o)

build-fuzz/obj/%.o: %.c $(wildcard funneld/*.h)
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build-fuzz/libfunneld.a: $(FUZZ_LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BINS): build-fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h build-fuzz/libfunneld.a $(wildcard funneld/*.h)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build-fuzz/libfunneld.a $(LDLIBS)

# scripts/deps SET: build (make), demo (+ nginx, curl, openssl, python3), test (everything).
deps: deps-test
deps-build deps-demo deps-test:
	@scripts/deps $(@:deps-%=%)

check:
	@scripts/deps test
	@$(MAKE) --no-print-directory all $(UNIT_BINS) $(FUZZ_REPLAY)
	BUILD=$(BUILD) python3 tests/run.py

unit:
	@scripts/deps test
	@$(MAKE) --no-print-directory $(UNIT_BINS)
	BUILD=$(BUILD) python3 tests/run.py --only unit

integration:
	@scripts/deps test
	@$(MAKE) --no-print-directory all
	BUILD=$(BUILD) python3 tests/run.py --only integration

# `make fuzz`: each target FUZZ_SECONDS, corpus in build-fuzz/corpus/NAME (seeded from
# tests/fuzz/corpus/NAME), full log in build-fuzz/NAME.log, crashes in
# build-fuzz/artifacts/NAME/.  One summary line per target; fails if any target failed.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   ?=
fuzz:
	@scripts/deps test
	@$(MAKE) --no-print-directory fuzz-run
fuzz-run: SHELL := /bin/bash
fuzz-run: $(FUZZ_BINS)
	@rc=0; summary=(); for f in $(FUZZ_BINS); do n=$${f#build-fuzz/}; \
	  mkdir -p build-fuzz/corpus/$$n build-fuzz/artifacts/$$n; \
	  seeds=(); [ -d tests/fuzz/corpus/$$n ] && seeds=(tests/fuzz/corpus/$$n); \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -timeout=20 -print_final_stats=1 \
	    -artifact_prefix=build-fuzz/artifacts/$$n/ $(FUZZ_FLAGS) \
	    build-fuzz/corpus/$$n "$${seeds[@]}" >build-fuzz/$$n.log 2>&1; st=$$?; \
	  done_line=$$(grep -E '^#[0-9]+[[:space:]]+DONE' build-fuzz/$$n.log | tail -n 1); \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' build-fuzz/$$n.log | tail -n 1); \
	  eps=$$(sed -n 's/^stat::average_exec_per_sec: *//p' build-fuzz/$$n.log | tail -n 1); \
	  cov=$$(echo "$$done_line" | sed -n 's/.*cov: \([0-9]*\).*/\1/p'); \
	  ft=$$(echo "$$done_line" | sed -n 's/.*ft: \([0-9]*\).*/\1/p'); \
	  corp=$$(echo "$$done_line" | sed -n 's/.*corp: \([^ ]*\).*/\1/p'); \
	  line=$$(printf '%-13s %s  runs=%s exec/s=%s cov=%s ft=%s corp=%s' $$n \
	    "$$([ $$st = 0 ] && echo ok || echo FAIL)" "$${execs:-?}" "$${eps:-?}" "$${cov:-?}" "$${ft:-?}" "$${corp:-?}"); \
	  echo "$$line"; summary+=("$$line"); \
	  if [ $$st != 0 ]; then rc=1; echo "-- $$n failed (exit $$st); end of build-fuzz/$$n.log:"; \
	    tail -n 40 build-fuzz/$$n.log; ls build-fuzz/artifacts/$$n/; fi; \
	done; echo "== fuzz summary ($(FUZZ_SECONDS)s each)"; printf '%s\n' "$${summary[@]}"; \
	[ $$rc = 0 ] && echo "fuzz: PASS" || echo "fuzz: FAIL"; exit $$rc

# MODE=tailscaled: the path behind a stock tailscaled (a [listener] with PROXY v2).
demo:
	@scripts/deps demo
	@$(MAKE) --no-print-directory all
	scripts/demo$(if $(MODE), --mode $(MODE))

demo-keep:
	@scripts/deps demo
	@$(MAKE) --no-print-directory all
	scripts/demo --keep$(if $(MODE), --mode $(MODE))

# bench/run installs the peer terminators it compares against itself.
bench:
	@scripts/deps demo
	@$(MAKE) --no-print-directory all
	bench/run

lint:
	@scripts/deps test
	scripts/lint

# `make soak`: tests/soak.py with its defaults (20,000 connections of every kind,
# streams up to 64 MiB, a few minutes); SOAK_ARGS changes them, e.g.
# SOAK_ARGS="--connections 2000 --seconds 60".  `make check` runs a short one.
soak:
	@scripts/deps test
	@$(MAKE) --no-print-directory all
	BUILD=$(BUILD) python3 tests/soak.py $(SOAK_ARGS)

# `make valgrind`: integration tests with every funneld they start under memcheck
# (harness.py's FUNNELD_WRAPPER).  VALGRIND_TESTS: test file patterns (default all).
# Reports: $(BUILD)/valgrind/vg.PID.log; any memcheck error or definite leak fails.
# Needs the plain build: valgrind does not run ASan binaries.
VALGRIND_TESTS ?= test_*.py
VALGRIND_DIR   := $(abspath $(BUILD))/valgrind
VALGRIND       ?= valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
                  --track-origins=yes --num-callers=30 --log-file=$(VALGRIND_DIR)/vg.%p.log
valgrind:
	@scripts/deps test
	@$(MAKE) --no-print-directory valgrind-run
valgrind-run: SHELL := /bin/bash
valgrind-run: all
	@test -z "$(SANITIZE)" || { echo "valgrind: use a build without SANITIZE"; exit 2; }
	@rm -rf $(VALGRIND_DIR) && mkdir -p $(VALGRIND_DIR)
	@rc=0; for t in $(VALGRIND_TESTS); do echo "== valgrind: $$t"; \
	  BUILD=$(BUILD) FUNNELD_WRAPPER="$(VALGRIND)" python3 tests/run.py --only integration --pattern "$$t" || rc=1; \
	done; runs=0; bad=0; cut=0; \
	for l in $(VALGRIND_DIR)/vg.*.log; do [ -e "$$l" ] || continue; runs=$$((runs + 1)); \
	  if ! grep -q 'ERROR SUMMARY:' "$$l"; then cut=$$((cut + 1)); echo "-- $$l: no summary (funneld killed?)"; \
	  elif ! grep -q 'ERROR SUMMARY: 0 errors' "$$l"; then bad=$$((bad + 1)); echo "-- $$l:"; \
	    grep -E '^==[0-9]+== ' "$$l" | sed -n '/Invalid\|uninitialised\|definitely lost\|ERROR SUMMARY\|Syscall param\|Mismatched\|   at \|   by /p' | head -n 60; fi; \
	done; \
	echo "valgrind: $$runs funneld runs, $$bad with errors or definite leaks, $$cut without a summary"; \
	if [ $$bad = 0 ] && [ $$rc = 0 ] && [ $$runs -gt 0 ]; then echo "valgrind: PASS"; \
	else echo "valgrind: FAIL (tests $$([ $$rc = 0 ] && echo passed || echo failed), $$bad runs with errors)"; exit 1; fi

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

# `make deb`: the Debian package for the release this machine runs, from
# debian/ (dpkg-buildpackage, debhelper), then lintian (errors fail).  It
# builds in a copy of the tracked and untracked-but-not-ignored files
# ($(DEB_DIR)/funneld-$(VERSION)), so the tree is not touched, and leaves
# $(DEB_DIR)/funneld_$(VERSION)_amd64.deb (and its -dbgsym, .buildinfo and
# .changes).  debian/changelog's version must be $(VERSION).
.PHONY: deb check-systemd
DEB_DIR  ?= build-deb
DEB_PKGS := debhelper dpkg-dev lintian libcmocka-dev python3 \
            $(if $(shell apt-cache show --no-all-versions systemd-dev 2>/dev/null),systemd-dev,systemd)
deb: SHELL := /bin/bash
deb:
	@EXTRA_PKGS="$(DEB_PKGS)" scripts/deps build
	@v=$$(dpkg-parsechangelog -S Version) && [ "$$v" = "$(VERSION)" ] || \
	  { echo "deb: debian/changelog is at $$v, the Makefile at $(VERSION): add a changelog entry (dch -v $(VERSION))"; exit 1; }
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/funneld-$(VERSION)
	set -o pipefail; if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git ls-files -z --cached --others --exclude-standard | \
	    tar --null -T - --ignore-failed-read -cf - | tar -xf - -C $(DEB_DIR)/funneld-$(VERSION); \
	else tar --exclude='./build' --exclude='./build-*' -cf - . | tar -xf - -C $(DEB_DIR)/funneld-$(VERSION); fi
	cd $(DEB_DIR)/funneld-$(VERSION) && dpkg-buildpackage -b -us -uc
	lintian --fail-on error --display-info $(DEB_DIR)/funneld_$(VERSION)_*.changes
	@ls -l $(DEB_DIR)/*.deb

# `make check-systemd`: for each of RELEASES, the .deb built in a root of that
# release and installed with apt in a booted systemd-nspawn container (private
# network), then funneld checked through systemctl and journalctl: one line
# per check, "N passed, N failed" last.  See tests/systemd/run.  Roots are
# cached in /var/cache/funneld-roots/check-systemd; logs and .debs in
# build-systemd/RELEASE/.
RELEASES ?= bookworm trixie
check-systemd:
	@EXTRA_PKGS="mmdebstrap systemd-container" scripts/deps build
	RELEASES="$(RELEASES)" tests/systemd/run

# `make flood`: tests/flood.py, one funneld (workers = 2) under attack while legitimate
# clients stream through it: a full-handshake flood from one public client, 5,000 idle
# connections from 8 loopback peers, resets right after the ClientHello, 100,000 distinct
# public sources; two rounds of 45 s, a few minutes in all.  Reports the legitimate
# clients' success rate and p99 connect time and funneld's CPU and RSS during and after;
# fails if a legitimate stream fails or differs, funneld dies, or its memory does not
# come back.  FLOOD_ARGS changes it, e.g. FLOOD_ARGS="--rounds 1 --flood-seconds 20";
# --limits off: no max_pending, no [clients] (the figures without them; see --help).
.PHONY: flood
flood:
	@EXTRA_PKGS=libssl-dev scripts/deps test
	@$(MAKE) --no-print-directory all
	BUILD=$(BUILD) python3 tests/flood.py $(FLOOD_ARGS)
