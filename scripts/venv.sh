# Sourced by scripts/quickstart.sh and scripts/test.sh (bash): project virtual environments.
#
#   make_venv DIR   creates DIR with `python3 -m venv` unless DIR already holds a working one;
#                   sets VENV_PY to DIR/bin/python. Never installs anything into the system Python.
#
# The base interpreter: $MASKMAGIC_PYTHON if set, else the first of python3, python3.13 ...
# python3.10 on the PATH that is Python >= 3.10 (on a bare Debian 12: /usr/bin/python3, 3.11).
# Debian ships venv's ensurepip in a separate package: when it is missing, python3-venv
# (python3.X-venv for another version) is installed with apt-get, as root or through sudo.

die() {
  echo "error: $*" >&2
  exit 1
}

# Prints the path of a Python >= 3.10 to build virtual environments from.
find_python() {
  local candidates=(python3 python3.13 python3.12 python3.11 python3.10)
  if [ -n "${MASKMAGIC_PYTHON:-}" ]; then
    candidates=("$MASKMAGIC_PYTHON")
  fi
  local name path
  for name in "${candidates[@]}"; do
    path=$(command -v "$name" 2>/dev/null) || continue
    if "$path" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$path"
      return 0
    fi
  done
  die "maskmagic needs Python >= 3.10 (tried: ${candidates[*]}); on Debian/Ubuntu: apt-get install python3"
}

# Runs apt-get with the given arguments as root (directly, or through sudo).
as_root_apt_get() {
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get "$@"
  else
    die "need root or sudo to run: apt-get $*"
  fi
}

# Installs Debian's venv package for interpreter $1 (python3-venv for the system python3).
install_venv_package() {
  local python=$1 version package
  command -v apt-get >/dev/null 2>&1 ||
    die "$python cannot create virtual environments (no venv/ensurepip) and apt-get is missing: install your distribution's venv package"
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  package=python3-venv
  if [ "$(readlink -f "$python")" != "$(readlink -f /usr/bin/python3 2>/dev/null)" ]; then
    package="python${version}-venv"
  fi
  echo "== installing $package (Debian's venv/ensurepip for $python)"
  as_root_apt_get update -qq
  as_root_apt_get install -y -qq --no-install-recommends "$package" >/dev/null
}

make_venv() {
  local dir=$1 python
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import sys, pip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "== using the virtual environment $dir"
  else
    python=$(find_python)
    rm -rf "$dir"
    echo "== creating the virtual environment $dir with $python ($("$python" --version 2>&1))"
    if ! "$python" -m venv "$dir" >/dev/null 2>&1; then
      rm -rf "$dir"
      install_venv_package "$python"
      "$python" -m venv "$dir" || die "$python -m venv $dir failed"
    fi
  fi
  VENV_PY="$dir/bin/python"
}
