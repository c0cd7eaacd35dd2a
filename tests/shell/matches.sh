# Sourced by the shell tests, which run under `set -o pipefail`.
#
# matches [GREP_OPTIONS] PATTERN: like `grep -q`, but reads its input to the
# end. `COMMAND | grep -q X` fails under pipefail whenever grep finds X and
# exits before COMMAND has written everything (COMMAND dies of SIGPIPE), so
# a match could fail the test; `COMMAND | matches X` cannot.
matches() {
  local status=0
  grep -q "$@" || status=$?
  cat >/dev/null
  return "$status"
}
