# shellcheck shell=bash
# Helpers sourced by the launch scripts: clear argument errors and --dry-run printing.
# The sourcing script sets SCRIPT (its name, for messages) and dry_run (0 or 1).

die() {
  echo "$SCRIPT: $*" >&2
  echo "Run launch/$SCRIPT --help for usage." >&2
  exit 2
}

# Prints the header comment of the script $1 (its usage), without the leading '# '.
usage() {
  sed -n '2,/^set -euo/p' "$1" | sed '$d; s/^# \{0,1\}//'
}

# Prints a command, quoting only the words that need it, then runs it unless --dry-run.
run() {
  local words=() w
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then words+=("$w"); else words+=("${w@Q}"); fi
  done
  echo "${words[*]}"
  if [[ ${dry_run:-0} == 0 ]]; then "$@"; fi
}

# Fails unless each named variable is non-empty; its flag is --<variable name>.
need() {
  local _var
  for _var in "$@"; do
    [[ -n ${!_var} ]] || die "${command:+$command }needs --${_var}=..."
  done
}
