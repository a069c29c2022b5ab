#!/usr/bin/env bash
# Load benchmark: simulated routers against one server, both on this machine, loopback only.
# Bounded in count and time; stops everything it started. Results go to stdout.
#
#   bench/load.sh                       # 18,000 routers (the default), connect rate, memory, idle CPU
#   DEVICES=2000 bench/load.sh          # a smaller run
#   CELLULAR_DEVICES=200 CELLULAR_MINUTES=10 bench/load.sh cellular
#                                       # bytes on the wire per idle router, default timers
#   CELLULAR_PROFILE=1800/60 CELLULAR_MINUTES=61 bench/load.sh cellular
#                                       # the same for routers in a group with a timer profile
#                                       # (ping interval/pong timeout, seconds)
#   DEVICES=18000 bench/load.sh storm   # reconnect storm: a license of DEVICES*3/4 seats, every
#                                       # router connected, then the server is killed (SIGKILL)
#                                       # and restarted on the same port and data: seconds until
#                                       # all routers are back and licensed as before (same
#                                       # licensed serials, kept by the linger), with a timeline;
#                                       # the routers' reconnect backoff (1 s doubling, jittered)
#                                       # is part of that time
#   DEVICES=15000 bench/load.sh jobs    # a reboot job for every connected router (all licensed,
#                                       # in one group): seconds from the API request until every
#                                       # execution was sent, until all succeeded, and the
#                                       # server's peak RSS meanwhile
#
# Needs a release build (cargo build --release), curl, awk and ss (iproute2).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/floatilla}
DEVICES=${DEVICES:-18000}
RATE=${RATE:-20000}
IDLE_SECONDS=${IDLE_SECONDS:-60}
TIMEOUT=${TIMEOUT:-300}
MODE=${1:-load}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

server_flags=()
[[ $MODE == storm || $MODE == jobs ]] && server_flags+=(--allow-unsigned-licenses)
start_server() { # [ADDRESS]: starts the server on ADDRESS (default: a free port), waits until it serves
  "$BIN" serve --data-dir "$work/data" --listen "${1:-127.0.0.1:0}" "${server_flags[@]}" \
    >"$work/serve.out" 2>"$work/serve.err" &
  server=$!
  pids+=("$server")
  local deadline=$(( $(date +%s) + TIMEOUT ))
  until grep -q '^listening on ' "$work/serve.out" 2>/dev/null; do
    kill -0 "$server" 2>/dev/null || { echo "the server exited:" >&2; cat "$work/serve.err" >&2; exit 1; }
    (( $(date +%s) < deadline )) || { echo "the server did not start within $TIMEOUT s" >&2; exit 1; }
    sleep 0.1
  done
  url=$(sed -n 's/^listening on //p' "$work/serve.out")
  port=${url##*:}
}
start_server
admin=$("$BIN" admin --data-dir "$work/data" create-token --role admin)
"$BIN" admin --data-dir "$work/data" ca-certificate >"$work/ca.pem"
api() { # PATH JSON: posts JSON as the admin
  curl -s --cacert "$work/ca.pem" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d "$2" "$url$1"
}
profile=${CELLULAR_PROFILE:-}
if [[ $MODE == cellular && -n $profile ]]; then
  api /api/v1/groups "{\"name\": \"low-data\", \"timer_profile\": {\"ping_interval_secs\": ${profile%/*}, \"pong_timeout_secs\": ${profile#*/}}}" >/dev/null
  token_request='{"name": "load", "group": "low-data"}'
elif [[ $MODE == jobs ]]; then
  api /api/v1/groups '{"name": "fleet"}' >/dev/null
  token_request='{"name": "load", "group": "fleet"}'
else
  token_request='{"name": "load"}'
fi
token=$(api /api/v1/enrollment-tokens "$token_request" | sed 's/.*"token":"\([^"]*\)".*/\1/')

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
connected() { curl -s --cacert "$work/ca.pem" "$url/metrics" | awk '/^floatilla_routers_connected / {print int($2)}'; }
now() { date +%s.%N; }
wait_connected() { # COUNT: waits until the server counts COUNT routers; prints the seconds it took
  local start deadline
  start=$(now); deadline=$(( $(date +%s) + TIMEOUT ))
  until [[ $(connected) == "$1" ]]; do
    (( $(date +%s) < deadline )) || { echo "timed out waiting for $1 routers (at $(connected))" >&2; exit 1; }
    sleep 0.2
  done
  awk -v s="$start" -v e="$(now)" 'BEGIN {printf "%.2f", e - s}'
}
simulate() { # DEVICES RATE: starts the simulator in the background
  "$BIN" simulate --server "$url" --enroll-token "$token" --devices "$1" --rate "$2" \
    --state-dir "$work/sim" >/dev/null 2>"$work/sim.err" &
  sim=$!
  pids+=("$sim")
}
stop_simulator() { kill -INT "$sim"; wait "$sim" || true; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); commit $(git rev-parse --short HEAD)"

if [[ $MODE == cellular ]]; then
  n=${CELLULAR_DEVICES:-200}
  minutes=${CELLULAR_MINUTES:-10}
  simulate "$n" 200
  wait_connected "$n" >/dev/null
  sleep 5
  # Payload bytes both ways plus 52 bytes of IPv4+TCP header (with timestamps) per segment,
  # summed over the server's side of every router connection.
  wire() {
    ss -tinH state established "( sport = :$port )" | awk '
      { for (i = 1; i <= NF; i++) {
          split($i, kv, ":")
          if (kv[1] == "bytes_sent" || kv[1] == "bytes_received") bytes += kv[2]
          if (kv[1] == "segs_out" || kv[1] == "segs_in") segs += kv[2]
        } }
      END { printf "%d %d\n", bytes, segs }'
  }
  read -r b0 s0 < <(wire)
  sleep $(( minutes * 60 ))
  read -r b1 s1 < <(wire)
  awk -v n="$n" -v m="$minutes" -v p="${profile:-default (120/30)}" -v b="$(( b1 - b0 ))" -v s="$(( s1 - s0 ))" 'BEGIN {
    wire = b + 52 * s; per_hour = wire / n * 60 / m
    printf "idle routers: %d for %d min, timers: %s\n", n, m, p
    printf "payload+TLS bytes: %d, segments: %d\n", b, s
    printf "per router: %.0f bytes/hour on the wire, %.2f MB per 30-day month\n", per_hour, per_hour * 24 * 30 / 1e6
  }'
  stop_simulator
  exit 0
fi

if [[ $MODE == jobs ]]; then
  get() { curl -s --cacert "$work/ca.pem" -H "Authorization: Bearer $admin" "$url$1"; }
  count_of() { grep -o "\"$1\":[0-9]*" | cut -d: -f2 || true; }
  since() { awk -v s="$1" -v e="$(now)" 'BEGIN {printf "%.2f", e - s}'; }
  api /api/v1/licenses "{\"name\": \"jobs\", \"seats\": $DEVICES}" >/dev/null
  simulate "$DEVICES" "$RATE"
  wait_connected "$DEVICES" >/dev/null
  deadline=$(( $(date +%s) + TIMEOUT ))
  until [[ $(get /api/v1/license-pool | count_of in_use) == "$DEVICES" ]]; do
    (( $(date +%s) < deadline )) || { echo "timed out waiting for every router to hold a seat" >&2; exit 1; }
    sleep 0.2
  done
  sleep 2
  rss_before=$(rss_kb "$server")
  ( peak=0; while kill -0 "$server" 2>/dev/null; do
      r=$(rss_kb "$server" 2>/dev/null || echo 0); (( r > peak )) && { peak=$r; echo "$peak" >"$work/peak"; }
      sleep 0.05
    done ) &
  pids+=("$!")
  disown "$!"
  cpu0=$(cpu_ticks "$server")
  started=$(now)
  job=$(api /api/v1/jobs '{"kind": "reboot", "target": {"group": "fleet"}}' | grep -o '"id":"[^"]*"' | head -n 1 | cut -d'"' -f4)
  created=$(since "$started")
  sent="" done=""
  deadline=$(( $(date +%s) + TIMEOUT ))
  while [[ -z $done ]]; do
    view=$(get "/api/v1/jobs/$job")
    waiting=$(( $(count_of queued <<<"$view" | head -n 1) + 0 + $(count_of waiting_for_license <<<"$view" | head -n 1) + 0 ))
    [[ -z $sent && $waiting == 0 ]] && sent=$(since "$started")
    [[ $(count_of succeeded <<<"$view" | head -n 1) == "$DEVICES" ]] && done=$(since "$started")
    (( $(date +%s) < deadline )) || { echo "timed out: $view" >&2; exit 1; }
    sleep 0.05
  done
  cpu1=$(cpu_ticks "$server")
  awk -v n="$DEVICES" -v created="$created" -v sent="$sent" -v done="$done" -v before="$rss_before" \
      -v peak="$(cat "$work/peak")" -v c="$(( cpu1 - cpu0 ))" -v t="$(getconf CLK_TCK)" 'BEGIN {
    printf "routers: %d connected and licensed, one group; job: reboot for the group\n", n
    printf "  API request answered (job and executions stored): %.2f s\n", created
    printf "  every execution sent: %.2f s after the request (%.0f executions/s)\n", sent, n / sent
    printf "  every execution succeeded (simulated routers): %.2f s\n", done
    printf "  server RSS: %.1f MiB before, %.1f MiB peak meanwhile\n", before / 1024, peak / 1024
    printf "  server CPU meanwhile: %.2f s\n", c / t
  }'
  stop_simulator
  exit 0
fi

if [[ $MODE == storm ]]; then
  seats=$(( DEVICES * 3 / 4 ))
  excess=$(( DEVICES - seats ))
  get() { curl -s --cacert "$work/ca.pem" -H "Authorization: Bearer $admin" "$url$1"; }
  pool() { # "IN_USE EXCESS" of the license pool
    get /api/v1/license-pool | grep -o '"\(in_use\|excess\)":[0-9]*' | cut -d: -f2 | paste -sd' '
  }
  licensed_serials() { # the licensed routers' serials, sorted, one a line
    local cursor="" page
    while :; do
      page=$(get "/api/v1/devices?license_state=licensed&limit=1000${cursor:+&cursor=$cursor}")
      grep -o '"serial":"[^"]*"' <<<"$page" | cut -d'"' -f4 || true
      cursor=$(grep -o '"next":"[^"]*"' <<<"$page" | cut -d'"' -f4 || true)
      [[ -n $cursor ]] || break
    done | sort
  }
  since() { awk -v s="$1" -v e="$(now)" 'BEGIN {printf "%.2f", e - s}'; }
  sim_line() { tail -n 1 "$work/sim.err" 2>/dev/null; }
  sim_failed() { sim_line | sed -n 's/.* \([0-9]*\) failed attempts.*/\1/p'; }
  api /api/v1/licenses "{\"name\": \"storm\", \"seats\": $seats}" >/dev/null

  # Round 1 enrolls and connects every router, as in the load mode.
  simulate "$DEVICES" "$RATE"
  enroll_seconds=$(wait_connected "$DEVICES")
  deadline=$(( $(date +%s) + TIMEOUT ))
  until [[ $(pool) == "$seats $excess" ]]; do
    (( $(date +%s) < deadline )) || { echo "timed out waiting for the pool (at $(pool))" >&2; exit 1; }
    sleep 0.2
  done
  licensed_serials >"$work/licensed.before"
  sleep 2 # the simulator's progress line catches up
  failed0=$(sim_failed)

  # An unclean death: routers see their connections drop and come back with their backoff.
  killed_at=$(now)
  kill -KILL "$server"
  wait "$server" 2>/dev/null || true
  start_server "127.0.0.1:$port"
  startup_seconds=$(since "$killed_at")
  cpu0=$(cpu_ticks "$server")
  closed=$(sed 's/\x1b\[[0-9;]*m//g' "$work/serve.err" | grep -o 'closed=[0-9]*' | head -n 1 | cut -d= -f2 || true)
  first=""
  deadline=$(( $(date +%s) + TIMEOUT ))
  while :; do
    c=$(connected); c=${c:-0}
    t=$(since "$killed_at")
    echo "$t $c" >>"$work/timeline"
    [[ -z $first && $c -gt 0 ]] && first=$t
    [[ $c == "$DEVICES" && $(pool) == "$seats $excess" ]] && break
    (( $(date +%s) < deadline )) || { echo "timed out waiting for the storm to settle (at $c routers, pool $(pool))" >&2; exit 1; }
    sleep 0.2
  done
  storm_seconds=$(since "$killed_at")
  cpu1=$(cpu_ticks "$server")
  licensed_serials >"$work/licensed.after"
  sleep 2
  failed1=$(sim_failed)
  same=$(comm -3 "$work/licensed.before" "$work/licensed.after" | wc -l)
  # About 20 points of the connected count, the first at the restart.
  timeline=$(awk -v end="$storm_seconds" '
    BEGIN { step = end / 20; if (step < 0.25) step = 0.25; mark = 0 }
    $1 >= mark { printf " %.2fs:%d", $1, $2; mark = $1 + step }' "$work/timeline")
  awk -v n="$DEVICES" -v seats="$seats" -v r="$RATE" -v es="$enroll_seconds" -v ss="$storm_seconds" \
      -v up="$startup_seconds" -v first="$first" -v closed="${closed:-?}" \
      -v c="$(( cpu1 - cpu0 ))" -v t="$(getconf CLK_TCK)" -v failed="$(( ${failed1:-0} - ${failed0:-0} ))" \
      -v before="$(wc -l <"$work/licensed.before")" -v after="$(wc -l <"$work/licensed.after")" \
      -v differ="$same" -v timeline="$timeline" 'BEGIN {
    printf "routers: %d, seats: %d (%d excess), simulator start rate %d/s\n", n, seats, n - seats, r
    printf "round 1, enroll + connect: %.1f s (%.0f routers/s)\n", es, n / es
    printf "storm: killed with SIGKILL, restarted on the same port and data\n"
    printf "  restart until the server serves again: %.2f s (it closed %s sessions of the killed run)\n", up, closed
    printf "  first router back: %.2f s after the kill\n", first
    printf "  all back, pool at %d licensed + %d excess: %.2f s after the kill (%.0f routers/s), %.2f s after it served\n", seats, n - seats, ss, n / ss, ss - up
    printf "  server CPU from serving to settled: %.2f s (%.0f %% of one core)\n", c / t, c / t / (ss - up) * 100
    printf "  connection attempts that failed during the storm (simulator): %d\n", failed
    printf "  routers connected, by seconds after the kill:%s\n", timeline
    printf "  (a router retries 0.5-1 s after its connection drops, then 1-2, 2-4, 4-8 s ... while\n"
    printf "  its attempts fail: no router can be back sooner than 0.5 s, whatever the server does)\n"
    if (before == after && differ == 0) printf "licensed routers: the same %d before and after\n", before
    else printf "licensed routers: DIFFERENT: %d before, %d after, %d serials in only one list\n", before, after, differ
  }'
  stop_simulator
  exit 0
fi

# Round 1 enrolls every router (an HTTPS enrollment, then the channel: two full TLS handshakes).
simulate "$DEVICES" "$RATE"
enroll_seconds=$(wait_connected "$DEVICES")
stop_simulator
wait_connected 0 >/dev/null
# A fresh server process, so memory freed by enrollment does not hide what connections cost.
kill -INT "$server"; wait "$server" || true
start_server
sleep 2
rss_start=$(rss_kb "$server")
# Round 2 only connects (one full TLS handshake, WebSocket upgrade, HELLO, WELCOME).
simulate "$DEVICES" "$RATE"
connect_seconds=$(wait_connected "$DEVICES")
sleep 10
rss_connected=$(rss_kb "$server")
ticks=$(getconf CLK_TCK)
cpu0=$(cpu_ticks "$server"); sleep "$IDLE_SECONDS"; cpu1=$(cpu_ticks "$server")
rss_idle=$(rss_kb "$server")
awk -v n="$DEVICES" -v r="$RATE" -v es="$enroll_seconds" -v cs="$connect_seconds" \
    -v r0="$rss_start" -v r1="$rss_connected" -v r2="$rss_idle" \
    -v c="$(( cpu1 - cpu0 ))" -v t="$ticks" -v i="$IDLE_SECONDS" 'BEGIN {
  printf "routers: %d, simulator start rate %d/s\n", n, r
  printf "enroll + connect: %.1f s (%.0f routers/s)\n", es, n / es
  printf "connect: %.1f s (%.0f routers/s)\n", cs, n / cs
  printf "server RSS: %d kB at start, %d kB with all connected, %d kB after %d s idle\n", r0, r1, r2, i
  printf "server RSS per connected router: %.0f bytes\n", (r2 - r0) * 1024 / n
  printf "server CPU while idle: %.2f %% of one core\n", c / t / i * 100
}'
stop_simulator
