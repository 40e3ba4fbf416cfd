# lorad — mk/install.mk: `make install` and `make uninstall`, included from
# the Makefile (which defines B, the build directory).
#
#   make install                          under /usr/local
#   make install PREFIX=/usr              under /usr (a distribution's layout)
#   make install DESTDIR=/tmp/pkgroot     staged install (packaging)
#
# What goes where (PREFIX=/usr/local by default):
#   $(BINDIR)            lorad, loradctl, lorad-sync; the operator scripts under their
#                        installed names lorad-canary-rollout,
#                        lorad-fleet-rollout and lorad-update (each finds the
#                        canary script beside itself under either name).
#                        lorad-mkdemo is not installed: it writes the demo
#                        model of `make run`, a development tool.
#   $(UNITDIR)           lorad.service, lorad.socket, lorad@.service,
#                        lorad-update@.service, lorad-update@.timer,
#                        lorad-sync@.service
#   $(MANDIR)/man1, man8 loradctl.1, lorad.8, lorad-sync.8
#   $(DOCDIR)            README.md, update.conf.example (the template of
#                        /etc/lorad/update-SLOT.conf)
#   $(DATADIR)/grafana   lorad.json, the Grafana dashboard, when
#                        deploy/grafana/lorad.json exists
#   /etc/lorad/lorad.json  the default config (never overwritten)
#
# The units and man pages in the tree name /usr/local/...; they are
# installed with /usr/local/ rewritten to $(PREFIX)/, so ExecStart always
# names the installed binary. /etc/lorad is fixed (the units and
# ConfigurationDirectory= use it). State lives in /var/lib/lorad, created
# by systemd (StateDirectory=). Nothing here runs systemctl: afterwards run
# `systemctl daemon-reload && systemctl enable --now lorad`.

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/lorad
DATADIR ?= $(PREFIX)/share/lorad
CONFDIR := /etc/lorad
INSTALL ?= install

INSTALL_BINS    := lorad loradctl lorad-sync
INSTALL_SCRIPTS := canary-rollout fleet-rollout lorad-update
INSTALL_UNITS   := lorad.service lorad.socket lorad@.service lorad-update@.service \
                   lorad-update@.timer lorad-sync@.service
INSTALL_MAN     := man1/loradctl.1 man8/lorad.8 man8/lorad-sync.8
DASHBOARD       ?= deploy/grafana/lorad.json

# scripts/NAME.sh is installed as lorad-NAME (lorad-update.sh as lorad-update).
SCRIPT_NAMES := $(foreach s,$(INSTALL_SCRIPTS),$(if $(filter lorad-%,$(s)),$(s),lorad-$(s)))

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

# The shell lines that install FILE as DEST with /usr/local/ rewritten to
# $(PREFIX)/, mode 0644, put in place by rename ("FILE DEST" pairs in $$pairs).
INSTALL_REWRITTEN = set -e; set -- $$pairs; while [ $$\# -ge 2 ]; do \
	  echo "sed s\#/usr/local/\#$(PREFIX)/\# $$1 > $$2"; \
	  sed 's\#/usr/local/\#$(PREFIX)/\#g' "$$1" > "$$2.tmp"; \
	  chmod 0644 "$$2.tmp"; mv -f "$$2.tmp" "$$2"; shift 2; done

.PHONY: install uninstall
install: $(addprefix $(B)/,$(INSTALL_BINS))
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(CONFDIR)
	$(INSTALL) -m 0755 $(addprefix $(B)/,$(INSTALL_BINS)) $(DESTDIR)$(BINDIR)/
	@set -e; for s in $(INSTALL_SCRIPTS); do \
	  case $$s in lorad-*) n=$$s ;; *) n=lorad-$$s ;; esac; \
	  echo "$(INSTALL) -m 0755 scripts/$$s.sh $(DESTDIR)$(BINDIR)/$$n"; \
	  $(INSTALL) -m 0755 scripts/$$s.sh $(DESTDIR)$(BINDIR)/$$n; \
	done
	@pairs="$(foreach u,$(INSTALL_UNITS),systemd/$(u) $(DESTDIR)$(UNITDIR)/$(u)) \
	  $(foreach m,$(INSTALL_MAN),man/$(notdir $(m)) $(DESTDIR)$(MANDIR)/$(m))"; \
	  $(INSTALL_REWRITTEN)
	$(INSTALL) -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	$(INSTALL) -m 0644 conf/update.conf.example $(DESTDIR)$(DOCDIR)/update.conf.example
	@if [ -e $(DASHBOARD) ]; then \
	  echo "$(INSTALL) -D -m 0644 $(DASHBOARD) $(DESTDIR)$(DATADIR)/grafana/lorad.json"; \
	  $(INSTALL) -D -m 0644 $(DASHBOARD) $(DESTDIR)$(DATADIR)/grafana/lorad.json; \
	fi
	@if [ -e $(DESTDIR)$(CONFDIR)/lorad.json ]; then \
	  echo "keeping existing $(DESTDIR)$(CONFDIR)/lorad.json"; \
	else \
	  echo "writing default $(DESTDIR)$(CONFDIR)/lorad.json"; \
	  printf '%s\n' "$$LORAD_DEFAULT_CONFIG" > $(DESTDIR)$(CONFDIR)/lorad.json.tmp && \
	  chmod 0644 $(DESTDIR)$(CONFDIR)/lorad.json.tmp && \
	  mv -f $(DESTDIR)$(CONFDIR)/lorad.json.tmp $(DESTDIR)$(CONFDIR)/lorad.json; \
	fi

# Removes what install put in place, and the directories of lorad's own
# that are then empty, except /etc/lorad (the operator's config and token)
# and /var/lib/lorad (serving state).
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(INSTALL_BINS))
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(SCRIPT_NAMES))
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(INSTALL_UNITS))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/,$(INSTALL_MAN))
	rm -f $(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(DOCDIR)/update.conf.example
	rm -f $(DESTDIR)$(DATADIR)/grafana/lorad.json
	@for d in $(DESTDIR)$(DOCDIR) $(DESTDIR)$(DATADIR)/grafana $(DESTDIR)$(DATADIR); do \
	  if [ -d "$$d" ]; then echo "rmdir $$d"; rmdir "$$d" || true; fi; \
	done
