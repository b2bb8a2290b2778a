# Wharf: the verbs ops use. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
COMPOSE := scripts/compose.sh
URL := http://localhost:$(or $(WHARF_HTTP_PORT),8080)
PROMETHEUS_URL := http://127.0.0.1:$(or $(WHARF_PROMETHEUS_PORT),9090)
# `make dev`: the stack plus the development override (source mounted, workers reload).
DEV_COMPOSE := $(COMPOSE) -f compose.yaml -f deploy/compose/compose.dev.yaml
SECRETS_DIR := $(or $(WHARF_SECRETS_DIR),deploy/compose/secrets)
BACKUP_DIR ?= backups
# `exec` allocates a terminal only when we have one, so the commands also work in pipes and scripts.
EXEC := $(COMPOSE) exec $(shell [ -t 0 ] || echo -T)

.PHONY: help up deploy rollback dev observability down logs ps images test test-unit test-integration test-faults k8s-validate k8s-smoke bench bench-workers bench-ab bench-idle soak lint fmt config lock base-images clean admin unlock rotate-keys \
	migrate backup backups restore backup-verify dump load psql redis-cli shell mail

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

up: ## Build what is missing, start the stack, wait until healthy, print the URL
	@scripts/bootstrap-docker.sh
	@start=$$(date +%s); $(COMPOSE) up --detach --build --wait --wait-timeout 300 --quiet-pull \
	  && echo "Wharf is up at $(URL) (ready in $$(( $$(date +%s) - start )) s)" \
	  || { scripts/why-down.sh >&2; exit 1; }

deploy: ## A new version of api and auth without a failed request: build, migrate, replace replicas one at a time
	@scripts/bootstrap-docker.sh
	@scripts/deploy.sh deploy

rollback: ## Back to the api and auth images that ran before the last deploy, one replica at a time (schema kept)
	@scripts/deploy.sh rollback

dev: ## Start for development: api/auth source mounted, a code change is live in seconds (no rebuild)
	@scripts/bootstrap-docker.sh
	@$(DEV_COMPOSE) up --detach --build --wait --wait-timeout 300 --quiet-pull \
	  && echo "Wharf (dev) is up at $(URL): edits under services/*/src and libs/wharf-common/src reload the workers; API docs at $(URL)/docs/"

observability: ## Start the stack with Prometheus (profile observability), its UI on 127.0.0.1:9090
	@COMPOSE_PROFILES=observability $(MAKE) --no-print-directory up && echo "Prometheus: $(PROMETHEUS_URL)"

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

test-unit: ## Unit tests only, on the images' Python in a container, in parallel (real Postgres and Redis containers, no composed stack)
	@scripts/test-unit.sh

test-integration: ## Integration tests against the composed stack through nginx
	@scripts/test.sh tests/integration

test-faults: ## Faults under load on a compose project of their own; prints the fault table (tests/README.md keeps the latest)
	@scripts/test.sh -m resilience tests/integration/test_faults.py

k8s-validate: ## Render every k8s/ overlay with the pinned kustomize and check it offline (no cluster, no Docker)
	@scripts/venv.sh
	@scripts/k8s-tools.sh >/dev/null
	@.venv/bin/pytest tests/k8s -q

k8s-smoke: ## Start the k8s dev overlay's pods on Docker from their rendered specs (kubeplay), then the client flow through its nginx Service
	@scripts/test.sh tests/kubeplay

bench: ## Load-test the stack through nginx (own project wharf-bench, about 6 min); results: bench/results/, bench/README.md
	@scripts/bench.sh

bench-workers: ## The worker-model sweep behind the gunicorn defaults (MODELS="2x3x1 2x2x4": replicas x workers x threads)
	@scripts/bench.sh workers $(MODELS)

bench-ab: ## Interleaved A/B of two builds on chosen scenarios: make bench-ab A=tag B="tag tag,VAR=value" [SCENARIOS="post patch"] (bench/ab.py)
	@scripts/bench.sh ab $(A) $(B) -- $(SCENARIOS)

bench-idle: ## The stack's CPU at rest against its 60 ms/s target (project wharf-bench, about 4 min; a quiet machine)
	@scripts/bench.sh idle

soak: ## Memory under a long mixed load (own project wharf-soak; SOAK_SECONDS, 1800): each container's memory over time
	@scripts/bench.sh soak

lint: ## ruff (lint + format check), no import circle (lint-imports), compose config, shell syntax
	@scripts/venv.sh
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@out=$$(.venv/bin/lint-imports --no-cache 2>&1) || { printf '%s\n' "$$out" >&2; exit 1; }
	@docker compose config --quiet
	@for f in scripts/*.sh k8s/*.sh deploy/*.sh deploy/images/*.sh deploy/images/*/*.sh deploy/nginx/*.sh deploy/postgres/*.sh deploy/acme/*.sh deploy/backup/*.sh .ci/run; do bash -n "$$f" || exit 1; done
	@for f in deploy/prometheus/*.sh deploy/alertmanager/*.sh; do sh -n "$$f" || exit 1; done  # POSIX sh: busybox images
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

unlock: ## Lift the sign-in lock of an account now (failed attempts forgotten): make unlock EMAIL=someone@example.com
	@test -n "$(EMAIL)" || { echo "usage: make unlock EMAIL=someone@example.com" >&2; exit 2; }
	@$(EXEC) auth flask unlock "$(EMAIL)"

rotate-keys: ## Add a token signing key: published now, signs after SIGNING_KEY_ACTIVATION_SECONDS; old keys keep verifying, retire after an hour
	@$(COMPOSE) run --rm --no-deps dev-secrets python -m wharf_common.devsecrets /secrets --rotate-signing-key

migrate: ## Run both services' database migrations now (they also run on every `make up`)
	@$(COMPOSE) run --rm auth-migrate
	@$(COMPOSE) run --rm api-migrate

backup: ## A backup now (pgBackRest; TYPE=full|diff|incr, default diff): prints its label and size
	@scripts/backup.sh backup $(TYPE)

backups: ## The backups: label, type, time, size; the oldest restorable time and the newest archived WAL
	@scripts/backup.sh list

restore: ## Restore the newest state, or AT="2026-12-06 14:02:59+00" (point in time), or LABEL=<label>; services paused meanwhile
	@AT="$(AT)" LABEL="$(LABEL)" scripts/backup.sh restore

backup-verify: ## Restore the newest backup into a scratch Postgres, check it (pgBackRest verify, Alembic, queries), drop it
	@scripts/backup.sh verify

dump: ## Dump both schemas (auth, api) into $(BACKUP_DIR)/wharf-<UTC time>.dump, to move data between installations
	@mkdir -p "$(BACKUP_DIR)"
	@file="$(BACKUP_DIR)/wharf-$$(date -u +%Y%m%dT%H%M%SZ).dump"; \
	  $(COMPOSE) exec -T postgres pg_dump -U postgres -d wharf --schema=auth --schema=api --format=custom >"$$file.partial" \
	  && mv "$$file.partial" "$$file" && echo "dump written: $$file ($$(du -h "$$file" | cut -f1))" \
	  || { rm -f "$$file.partial"; echo "dump failed" >&2; exit 1; }

load: ## Replace both schemas with a dump: make load FILE=backups/wharf-....dump (apps paused meanwhile)
	@test -f "$(FILE)" || { echo "usage: make load FILE=backups/wharf-<time>.dump" >&2; exit 2; }
	@$(COMPOSE) stop api auth
	@$(COMPOSE) exec -T postgres pg_restore -U postgres -d wharf --clean --if-exists --single-transaction <"$(FILE)" \
	  || { echo "load failed; the database is unchanged (single transaction)" >&2; $(COMPOSE) start api auth; exit 1; }
	@$(COMPOSE) run --rm --no-deps api flask cache-clear
	@$(COMPOSE) up --detach --wait --wait-timeout 120 api auth
	@echo "loaded $(FILE)"

psql: ## Open psql on the database as the Postgres superuser
	@$(EXEC) postgres psql -U postgres -d wharf

redis-cli: ## Open redis-cli as a service's Redis user (REDIS_USER=api|auth|auth-mail, default api)
	@$(EXEC) -e REDISCLI_AUTH="$$(cat "$(SECRETS_DIR)/$(or $(REDIS_USER),api)/redis_password")" redis \
	  redis-cli --user "$(or $(REDIS_USER),api)"

mail: ## What the development mail sink received: a list, or one message with N=<number> (N=-1: the newest)
	@$(EXEC) mail-sink python /app/mailsink.py $(if $(N),show $(N),list)

shell: ## Open a shell in a running service container: make shell SERVICE=api
	@test -n "$(SERVICE)" || { echo "usage: make shell SERVICE=api|auth|nginx|postgres|redis" >&2; exit 2; }
	@$(EXEC) $(SERVICE) sh
