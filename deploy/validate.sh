#!/usr/bin/env bash
# Offline checks of deploy/, for machines without a Docker engine or a cluster:
#   1. Kubernetes manifests against the API schemas shipped in the PyPI package
#      kubernetes-validate (strict: unknown fields are errors). RayCluster is a CRD the package
#      has no schema for: its head and worker pod templates are checked as PodTemplates.
#   2. docker-compose.yml with `docker compose config` (or the standalone `docker-compose`).
#   3. The Dockerfile's build steps, run as a script: the COPY'd files into a fresh
#      python3.11 venv, `pip install '.[adserving]'`, then the image's CMD with --help.
# Tools go into a temporary venv, never into the project. Usage: deploy/validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== 1. Kubernetes schemas"
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q kubernetes-validate pyyaml
"$work/tools/bin/python" - "$work/raypods.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open("deploy/k8s/raycluster.yaml")) if d]
out = []
for d in docs:
    groups = [d["spec"]["headGroupSpec"], *d["spec"]["workerGroupSpecs"]]
    for i, g in enumerate(groups):
        out.append({"apiVersion": "v1", "kind": "PodTemplate",
                    "metadata": {"name": f"{d['metadata']['name']}-{g.get('groupName', 'head')}"},
                    "template": g["template"]})
yaml.safe_dump_all(out, open(sys.argv[1], "w"))
PY
"$work/tools/bin/kubernetes-validate" --strict deploy/k8s/*.yaml "$work/raypods.yaml"

echo "== 2. docker-compose.yml"
export REDIS_PASSWORD=validate-only POSTGRES_PASSWORD=validate-only
if docker compose version >/dev/null 2>&1; then
    docker compose -f deploy/docker-compose.yml config -q
elif command -v docker-compose >/dev/null; then
    docker-compose -f deploy/docker-compose.yml config -q
else
    echo "SKIPPED: neither 'docker compose' nor 'docker-compose' is installed"
fi

echo "== 3. Dockerfile steps in a venv"
ctx="$work/ctx"
mkdir -p "$ctx"
cp pyproject.toml README.md "$ctx/"
cp -r streamtasks schema "$ctx/"
python3.11 -m venv "$work/image"
(cd "$ctx" && PIP_NO_CACHE_DIR=1 "$work/image/bin/pip" install -q '.[adserving]')
"$work/image/bin/streamtasks" worker --help | grep -q -- "--metrics-port"
"$work/image/bin/python" -c "import streamtasks.builtins, streamtasks.observe.metrics, streamtasks.observe.inspect"
echo "deploy/: all offline checks passed"
