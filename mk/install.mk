# lorad — mk/install.mk: `make install` and `make uninstall`, included from
# the Makefile (which defines B, the build directory).
#
#   make install                          /usr/local/bin/lorad, units in
#                                         /usr/local/lib/systemd/system
#   make install PREFIX=/usr              /usr/bin/lorad, /usr/lib/systemd/system
#   make install DESTDIR=/tmp/pkgroot     staged install (packaging)
#
# The units in systemd/ name /usr/local/bin/lorad; they are installed with
# /usr/local/ rewritten to $(PREFIX)/, so ExecStart always names the
# installed binary. The default config goes to /etc/lorad/lorad.json
# (fixed: the units and ConfigurationDirectory= use /etc/lorad) and an
# existing one is never overwritten. State lives in /var/lib/lorad, created
# by systemd (StateDirectory=). Nothing here runs systemctl: afterwards run
# `systemctl daemon-reload && systemctl enable --now lorad`.

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR  ?= $(PREFIX)/share/doc/lorad
CONFDIR := /etc/lorad
INSTALL ?= install

INSTALL_UNITS := lorad.service lorad.socket lorad@.service

# The default /etc/lorad/lorad.json: SPEC.md 5 defaults with system paths.
define LORAD_DEFAULT_CONFIG
{
  "listen": "127.0.0.1:8080",
  "control_listen": null,
  "model_dir": "/srv/lorad/model",
  "adapter_dir": "/srv/lorad/adapters",
  "initial_adapter": null,
  "state_file": "/var/lib/lorad/state.json",
  "workers": 0,
  "max_batch_rows": 64,
  "history": 4,
  "max_rank": 0,
  "target_modules": null,
  "auth_token_file": null,
  "max_body_bytes": 16777216,
  "max_rows_per_request": 1024,
  "drain_timeout_ms": 10000,
  "shutdown_delay_ms": 0,
  "blas_coretype": "auto",
  "log_level": "info"
}
endef
export LORAD_DEFAULT_CONFIG

.PHONY: install uninstall
install: $(B)/lorad
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) \
	  $(DESTDIR)$(CONFDIR)
	$(INSTALL) -m 0755 $(B)/lorad $(DESTDIR)$(BINDIR)/lorad
	$(INSTALL) -m 0755 scripts/canary-rollout.sh $(DESTDIR)$(BINDIR)/lorad-canary-rollout
	@set -e; for u in $(INSTALL_UNITS); do \
	  echo "sed s#/usr/local/#$(PREFIX)/# systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u"; \
	  sed 's#/usr/local/#$(PREFIX)/#g' systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp; \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp; \
	  mv -f $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u; \
	done
	$(INSTALL) -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@if [ -e $(DESTDIR)$(CONFDIR)/lorad.json ]; then \
	  echo "keeping existing $(DESTDIR)$(CONFDIR)/lorad.json"; \
	else \
	  echo "writing default $(DESTDIR)$(CONFDIR)/lorad.json"; \
	  printf '%s\n' "$$LORAD_DEFAULT_CONFIG" > $(DESTDIR)$(CONFDIR)/lorad.json.tmp && \
	  chmod 0644 $(DESTDIR)$(CONFDIR)/lorad.json.tmp && \
	  mv -f $(DESTDIR)$(CONFDIR)/lorad.json.tmp $(DESTDIR)$(CONFDIR)/lorad.json; \
	fi

# Removes what install put in place except /etc/lorad (the operator's config
# and token) and /var/lib/lorad (serving state).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/lorad $(DESTDIR)$(BINDIR)/lorad-canary-rollout
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(INSTALL_UNITS))
	rm -f $(DESTDIR)$(DOCDIR)/README.md
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null
