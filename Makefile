# Wharf: the verbs ops use. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
COMPOSE := scripts/compose.sh
URL := http://localhost:$(or $(WHARF_HTTP_PORT),8080)

.PHONY: help up down logs ps images test test-unit test-integration k8s-validate lint fmt config lock base-images clean admin rotate-keys

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

up: ## Build what is missing, start the stack, wait until healthy, print the URL
	@scripts/bootstrap-docker.sh
	@start=$$(date +%s); $(COMPOSE) up --detach --build --wait --wait-timeout 300 --quiet-pull \
	  && echo "Wharf is up at $(URL) (healthy in $$(( $$(date +%s) - start )) s)"

down: ## Stop and remove the containers (data volumes are kept)
	@$(COMPOSE) down --remove-orphans

logs: ## Follow the logs of every service (SERVICE=name for one)
	@$(COMPOSE) logs --follow --tail 100 $(SERVICE)

ps: ## Show the containers and their health
	@$(COMPOSE) ps --all

images: ## Show the project's images and their sizes
	@docker image ls --format 'table {{.Repository}}:{{.Tag}}\t{{.Size}}\t{{.CreatedSince}}' \
	  | grep -E '^(REPOSITORY|wharf/|wharf-local/)'

test: ## Install what is needed and run every test suite (unit + integration in real containers)
	@scripts/test.sh

test-unit: ## Unit tests only (real Postgres and Redis containers, no composed stack)
	@scripts/test.sh libs/wharf-common/tests services/auth/tests services/api/tests

test-integration: ## Integration tests against the composed stack through nginx
	@scripts/test.sh tests/integration

k8s-validate: ## Render every k8s/ overlay with the pinned kustomize and check it offline (no cluster, no Docker)
	@scripts/venv.sh
	@scripts/k8s-tools.sh >/dev/null
	@.venv/bin/pytest tests/k8s -q

lint: ## ruff (lint + format check), compose config, shell syntax
	@scripts/venv.sh
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@docker compose config --quiet
	@for f in scripts/*.sh k8s/*.sh deploy/images/*.sh deploy/images/*/*.sh deploy/nginx/*.sh .ci/run; do bash -n "$$f" || exit 1; done
	@echo "lint: clean"

fmt: ## Format the Python code with ruff
	@scripts/venv.sh
	@.venv/bin/ruff format .
	@.venv/bin/ruff check --fix .

config: ## Print the effective compose configuration
	@$(COMPOSE) config

lock: ## Re-pin the Python dependencies (with hashes) from the pyproject files
	@scripts/venv.sh
	@UV=.venv/bin/uv scripts/lock.sh 2>/dev/null || { .venv/bin/pip install --quiet uv && UV=.venv/bin/uv scripts/lock.sh; }

base-images: ## Build the registry-free base images (WHARF_BASE_IMAGES=local uses them)
	@deploy/images/build-local-bases.sh

clean: ## Remove this project's containers, volumes and built images (secrets are kept)
	@$(COMPOSE) down --volumes --remove-orphans
	@$(COMPOSE) -p wharf-it down --volumes --remove-orphans 2>/dev/null || true
	@docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E '^(wharf|wharf-local)/' | xargs -r docker image rm -f >/dev/null
	@echo "removed containers, volumes and images of this project"

admin: ## Grant the admin role to an existing account: make admin EMAIL=someone@example.com
	@test -n "$(EMAIL)" || { echo "usage: make admin EMAIL=someone@example.com" >&2; exit 2; }
	@$(COMPOSE) exec auth flask grant-admin "$(EMAIL)"

rotate-keys: ## Add a new token signing key (old keys keep verifying, then retire after an hour)
	@$(COMPOSE) run --rm --no-deps dev-secrets python -m wharf_common.devsecrets /secrets --rotate-signing-key
