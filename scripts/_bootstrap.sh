# shellcheck shell=bash
# Shared bootstrap for scripts/test and scripts/demo; source it, then call `bootstrap`.
#
# bootstrap: cd to the repo root; create .venv with python3 (>= 3.10) if missing;
# `pip install -e '.[dev]'` unless the stamp file says this pyproject.toml is installed;
# make sure redis-server and PostgreSQL exist (apt-get install them when root, unless
# STREAMTASKS_NO_APT=1), and TimescaleDB from ../shared/timescaledb/install.sh beside the repo
# when that exists (as root; without it the TimescaleDB tests skip). Sets REPO_ROOT, VENV and VENV_PY.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
VENV_PY="$VENV/bin/python"
STAMP="$VENV/.streamtasks-install-stamp"
MIN_PYTHON="3.10"

step() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

check_python() {
  command -v python3 >/dev/null || die "python3 not found: install Python >= $MIN_PYTHON"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); streamtasks needs >= $MIN_PYTHON"
}

create_venv() {
  [[ -x "$VENV_PY" ]] && return 0
  step "create .venv"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if [[ "$(id -u)" == 0 && "${STREAMTASKS_NO_APT:-0}" != 1 ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -q && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv || die "apt-get install python3-venv failed"
      python3 -m venv "$VENV" || die "python3 -m venv failed"
    else
      die "python3 -m venv failed: install the python3-venv package"
    fi
  fi
}

install_project() {
  local want
  want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    return 0
  fi
  step "pip install -e '.[dev]'"
  "$VENV_PY" -m pip install -q --disable-pip-version-check -e "$REPO_ROOT[dev]" \
    || die "pip install -e '.[dev]' failed"
  printf '%s\n' "$want" > "$STAMP"
}

ensure_services() {
  step "check redis-server and PostgreSQL binaries (and TimescaleDB, Chromium)"
  python3 "$REPO_ROOT/scripts/services.py" ensure-binaries || exit 1
}

bootstrap() {
  cd "$REPO_ROOT"
  check_python
  create_venv
  install_project
  ensure_services
}
