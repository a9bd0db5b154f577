# Sourced by scripts/test, scripts/test-cpython and scripts/test-pypy: one way to make a
# virtual environment with puregrpc installed (editable) and some requirements.
#
#   make_venv DIR PYTHON... -- REQUIREMENT...
#
# A venv already made by the same interpreter for the same pyproject.toml and
# requirements is kept as it is (a stamp file records what made it): a second run of
# a script skips the ~30 s of setup, and CI makes every venv at once before any test
# runs (PUREGRPC_SETUP_ONLY, see .ci/run). Prints why it failed and returns 1 on error.

make_venv() {
  local dir=$1 python=() stamp want
  shift
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    python+=("$1")
    shift
  done
  shift  # the --
  stamp="$dir/.puregrpc-setup"
  want="$("${python[@]}" -c 'import sys; print(sys.version)' 2>&1 | head -n 1) | $*"
  want="$want | $(cksum < pyproject.toml)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  rm -f "$stamp"
  if ! { "${python[@]}" -m venv "$dir" &&
    printf '*\n' > "$dir/.gitignore" &&  # a venv ignores itself
    "$dir/bin/python" -m pip install -q --upgrade pip &&
    "$dir/bin/python" -m pip install -q "$@"; }; then
    echo "make_venv: setting up $dir failed"
    return 1
  fi
  printf '%s' "$want" > "$stamp"
}

# True when the caller only makes its venvs (PUREGRPC_SETUP_ONLY=1) and runs no test.
setup_only() {
  [ "${PUREGRPC_SETUP_ONLY:-}" = "1" ]
}
