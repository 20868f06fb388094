# The two set-up commands (README): `make dev` runs the stack, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
# The legacy n8n line the n8n_legacy tests run (zixly.provisioning.n8n.versions.LEGACY_N8N_VERSION;
# tests/test_n8n_versions.py checks they agree). The default line installs without --version.
N8N_LEGACY := 1.123.81

.PHONY: dev test lint bench

$(STAMP): pyproject.toml zixly/graphql/graphiql/package-lock.json
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	$(VENV)/bin/zixly graphiql install
	@touch $(STAMP)

dev: $(STAMP)
	$(VENV)/bin/zixly dev

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy zixly
	$(VENV)/bin/python tests/architecture.py
	bash scripts/ci-setup-kube.sh --start
	bash scripts/ci-setup-podman.sh
	bash scripts/install-chromium.sh
	bash scripts/ci-setup-node-clients.sh
	$(VENV)/bin/zixly n8n install
	$(VENV)/bin/zixly n8n install --version $(N8N_LEGACY)
	$(VENV)/bin/zixly n8n image
	$(VENV)/bin/zixly podman stop
	bash scripts/ci-setup-kube.sh --wait
	ZIXLY_REQUIRE_N8N=1 ZIXLY_REQUIRE_PODMAN=1 ZIXLY_REQUIRE_KUBE=1 ZIXLY_REQUIRE_BROWSER=1 $(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python -m bench.api --quick
