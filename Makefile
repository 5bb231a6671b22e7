# Thin wrappers; the scripts are the source of truth (scripts/test is what CI runs via .ci/run).
VENV ?= .venv

.PHONY: test services-up services-down services-status services-reset up lint bench

test:
	bash scripts/test $(ARGS)

services-up:
	bash scripts/services up

services-down:
	bash scripts/services down

services-status:
	bash scripts/services status

services-reset:
	bash scripts/services reset

# Local mode (embedded NATS + runtime): scripts/up is owned by the runtime work.
up:
	bash scripts/up $(ARGS)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Every bench/*.py against the real servers (started if needed).
bench: services-up
	@set -e; . ./.services.env; found=0; \
	for f in bench/*.py; do \
	  case "$$f" in */__init__.py|"bench/*.py") continue;; esac; \
	  found=1; echo "== $$f"; $(VENV)/bin/python "$$f" $(ARGS); \
	done; \
	if [ $$found = 0 ]; then echo "no bench/*.py yet" >&2; exit 1; fi
