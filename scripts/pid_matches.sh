# shellcheck shell=bash
# Sourced by scripts/services and scripts/kube: does a pid file name the server we started?

# pid_matches PIDFILE PATTERN: the pid in PIDFILE runs and its command line contains PATTERN (guards against
# a recycled pid). While a process execs, the kernel shows an empty command line (the new image's arguments
# are not set up yet); a server checked right after `spawn` can be there, so an empty one is read again for
# up to a second before it counts as not ours. A zombie has exited.
pid_matches() {
  local pid cmd state
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "${state%% *}" != Z ] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    if [ -n "$cmd" ]; then
      [[ $cmd == *"$2"* ]]
      return
    fi
    sleep 0.02
  done
  return 1
}
