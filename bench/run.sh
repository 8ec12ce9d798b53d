#!/usr/bin/env bash
# Backstop throughput and memory benchmark.
#
# On one throwaway PostgreSQL cluster filled by pgbench, for each size in SIZES (pgbench scale
# factors; 70 ≈ 1 GiB of table data) and each local S3 endpoint in BENCH_S3, it measures:
#   (a) backstop db backup (auto: pg_dump -Z0, Backstop's zstd on every core) -> S3 (release
#       build), once per level in BENCH_STREAM_LEVELS; the first level is the table's
#   (b) pg_dump -Fc -Z6 | aws s3 cp - s3://...              -> S3 (awscli from .venv)
#   (c) pg_dump -Fc -Z6 > /dev/null                         pg_dump's own gzip
#   (c0) pg_dump -Fc -Z0 > /dev/null                        the COPY limit of a logical dump
#   (d) the endpoint's own ingest: aws s3 cp FILE, curl PUT FILE (FILE = a dump of the same size)
#   restore: backstop db restore (swap into a new database) vs pg_restore -d NEWDB FILE
#   peak RSS (VmHWM) of the backstop process itself, backup and restore
# and prints a table plus machine-readable RESULT lines. MB = 10^6 bytes; every throughput is
# the archive's bytes (the pg_dump -Fc -Z6 file of that size) divided by wall seconds.
#
# Environment:
#   SIZES="35 70"         pgbench scale factors (with the random data: 0.86 and 1.7 GiB databases)
#   BENCH_STREAM_LEVELS="1 3"  zstd levels of Backstop's own compression to measure (a) at
#   BENCH_S3=auto         moto | s3s | "moto s3s" | auto (moto, plus s3s-fs when installable)
#   BENCH_REPEAT=1        runs of each measurement (not the endpoint set-up); the fastest counts
#   BENCH_INSTALL_S3S=1   cargo install s3s-fs into bench/.tools when missing
#   BENCH_BUILD=1         cargo build --release --bin backstop first
#   BENCH_TMP=/tmp        where the cluster, dumps and s3s-fs objects go (needs ~3x the data)
#   BENCH_KEEP=0          1 keeps the work directory
#   BENCH_RANDOM_MIB_PER_SCALE=8  also add this many MiB of incompressible bytea per scale unit
#                         (8 -> 560 MiB at scale 70): pgbench data compresses ~50:1, so without it
#                         the archive is ~20 MB per GiB and the upload path is barely exercised
#   PG_BIN_DIR=/usr/lib/postgresql/15/bin
# Needs root (runs initdb/pg_ctl as the postgres user via runuser).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
SIZES=${SIZES:-"35 70"}
BENCH_S3=${BENCH_S3:-auto}
BENCH_REPEAT=${BENCH_REPEAT:-1}
BENCH_INSTALL_S3S=${BENCH_INSTALL_S3S:-1}
BENCH_BUILD=${BENCH_BUILD:-1}
BENCH_TMP=${BENCH_TMP:-/tmp}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_RANDOM_MIB_PER_SCALE=${BENCH_RANDOM_MIB_PER_SCALE:-8}
BENCH_STREAM_LEVELS=${BENCH_STREAM_LEVELS:-"1 3"}
PG_BIN_DIR=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
VENV=${BENCH_VENV:-$ROOT/.venv}
S3S_VERSION=${S3S_VERSION:-0.14.1} # newest s3s-fs that builds with rustc 1.95
S3S_FS=$BENCH/.tools/bin/s3s-fs
PY=$VENV/bin/python
AWS=$VENV/bin/aws

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", ($1) }"; } # EXPR [DECIMALS]; parenthesized: awk reads "printf x > y" as a redirection
now() { date +%s.%N; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[[ $(id -u) == 0 ]] || die "run as root (initdb/pg_ctl run as the postgres user via runuser)"
for tool in pg_dump pg_restore pgbench initdb pg_ctl psql createdb; do
  [[ -x $PG_BIN_DIR/$tool ]] || die "$PG_BIN_DIR/$tool missing (set PG_BIN_DIR)"
done
[[ -x $AWS && -x $VENV/bin/moto_server ]] || die "$VENV needs awscli and moto[server] (pip install -r requirements-dev.txt)"
command -v curl >/dev/null || die "curl missing"
id postgres >/dev/null 2>&1 || die "no postgres user"

# ---------------------------------------------------------------------------------------------
# Work directory, cleanup
WORK=$(mktemp -d "$BENCH_TMP/backstop-bench.XXXXXX")
chmod 755 "$WORK"
RUN_PID=""
SAMPLER_PID=""
SERVER_PIDS=()
PG_STARTED=0
PGDATA=$WORK/pgdata

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n $RUN_PID ]] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill -TERM -- "-$RUN_PID" 2>/dev/null
    sleep 1
    kill -KILL -- "-$RUN_PID" 2>/dev/null
  fi
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
  for p in "${SERVER_PIDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${SERVER_PIDS[@]}"; do
    wait "$p" 2>/dev/null
  done
  if [[ $PG_STARTED == 1 ]]; then
    runuser -u postgres -- "$PG_BIN_DIR/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
  fi
  if [[ $BENCH_KEEP == 1 ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Tools: backstop release build, s3s-fs
if [[ $BENCH_BUILD == 1 ]]; then
  log "building backstop (release)"
  (cd "$ROOT" && cargo build --release --bin backstop --quiet)
fi
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BACKSTOP=${BACKSTOP_BIN:-$TARGET_DIR/release/backstop}
[[ -x $BACKSTOP ]] || die "$BACKSTOP missing"
GIT_REV=$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)

ENDPOINTS=()
case $BENCH_S3 in
  auto) ENDPOINTS=(moto s3s) ;;
  *) read -r -a ENDPOINTS <<<"$BENCH_S3" ;;
esac
want_s3s=0
for e in "${ENDPOINTS[@]}"; do
  case $e in moto) ;; s3s) want_s3s=1 ;; *) die "BENCH_S3: unknown endpoint $e" ;; esac
done
if [[ $want_s3s == 1 && ! -x $S3S_FS ]]; then
  if [[ $BENCH_INSTALL_S3S == 1 ]]; then
    log "installing s3s-fs $S3S_VERSION into bench/.tools (one-off, a few minutes)"
    if ! cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$BENCH/.tools" \
      >"$WORK/s3s-install.log" 2>&1; then
      tail -20 "$WORK/s3s-install.log" >&2
      [[ $BENCH_S3 == auto ]] || die "could not install s3s-fs"
      log "could not install s3s-fs; running on moto only"
    fi
  fi
  if [[ ! -x $S3S_FS ]]; then
    [[ $BENCH_S3 == auto ]] || die "$S3S_FS missing (BENCH_INSTALL_S3S=1 installs it)"
    ENDPOINTS=(moto)
  fi
fi

# ---------------------------------------------------------------------------------------------
# Measurement helpers
CLK_TCK=$(getconf CLK_TCK)
LOAD0=$(cut -d' ' -f1 /proc/loadavg) # anything else running skews every figure: check it
NCPU=$(nproc)

cpu_total() { # prints "busy_ticks total_ticks" over all cores
  local _cpu u n s i w q sq st _rest
  read -r _cpu u n s i w q sq st _rest </proc/stat
  echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}

proc_ticks() { # utime+stime of a live process (all threads), 0 when gone
  local line rest
  read -r line <"/proc/$1/stat" 2>/dev/null || { echo 0; return; }
  rest=${line##*) }
  read -r -a f <<<"$rest"
  echo "$((f[11] + f[12]))"
}

sampler() { # PID OUT: keeps "peak_VmHWM_kib own_cpu_ticks children_cpu_ticks" of PID in OUT
  local pid=$1 out=$2 hwm=0 k v line rest
  while [[ -e /proc/$pid ]]; do
    while read -r k v _; do
      [[ $k == VmHWM: ]] && ((v > hwm)) && hwm=$v
    done <"/proc/$pid/status" 2>/dev/null || true
    read -r line <"/proc/$pid/stat" 2>/dev/null || break
    rest=${line##*) }
    read -r -a f <<<"$rest"
    echo "$hwm $((f[11] + f[12])) $((f[13] + f[14]))" >"$out.tmp" && mv -f "$out.tmp" "$out"
    sleep 0.05
  done
}

# measure LABEL CMD...: runs CMD (in its own session) and sets
#   M_SECS       wall seconds
#   M_HWM_MIB    peak VmHWM of the CMD process itself (MiB)
#   M_SELF_CPU   CPU seconds of the CMD process itself; M_CHILD_CPU: of its reaped children
#   M_SYS_BUSY   machine CPU busy, % of all cores, over the run
#   M_SRV_CPU    CPU of the S3 endpoint process, % of one core, over the run
# Fails the benchmark when CMD fails (its stderr is shown).
M_SRV_PID=""
measure() {
  local label=$1
  shift
  local out=$WORK/$label.out err=$WORK/$label.err samp=$WORK/$label.samp
  local b0 t0 b1 t1 s0=0 s1=0 w0 w1 rc=0
  read -r b0 t0 < <(cpu_total)
  [[ -n $M_SRV_PID ]] && s0=$(proc_ticks "$M_SRV_PID")
  echo "0 0 0" >"$samp"
  w0=$(now)
  setsid "$@" >"$out" 2>"$err" &
  RUN_PID=$!
  sampler "$RUN_PID" "$samp" &
  SAMPLER_PID=$!
  wait "$RUN_PID" || rc=$?
  w1=$(now)
  RUN_PID=""
  wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=""
  read -r b1 t1 < <(cpu_total)
  [[ -n $M_SRV_PID ]] && s1=$(proc_ticks "$M_SRV_PID")
  if [[ $rc != 0 ]]; then
    log "$label failed (exit $rc):"
    tail -30 "$err" >&2
    exit 1
  fi
  local hwm self child
  read -r hwm self child <"$samp"
  M_SECS=$(calc "$w1 - $w0" 3)
  M_HWM_MIB=$(calc "$hwm / 1024" 1)
  M_SELF_CPU=$(calc "$self / $CLK_TCK" 1)
  M_CHILD_CPU=$(calc "$child / $CLK_TCK" 1)
  M_SYS_BUSY=$(calc "($t1 > $t0) ? 100 * ($b1 - $b0) / ($t1 - $t0) : 0" 0)
  M_SRV_CPU=$(calc "100 * ($s1 - $s0) / $CLK_TCK / ($w1 - $w0)" 0)
  log "  $label: ${M_SECS}s, machine busy ${M_SYS_BUSY}% of $NCPU cores, endpoint ${M_SRV_CPU}% of a core, peak RSS ${M_HWM_MIB} MiB"
}

# best LABEL CMD...: measure BENCH_REPEAT times; keeps the fastest run's figures (peak RSS: the
# highest of all runs). BEST_AFTER, when set, is eval'ed after each run (outside the timing).
best() {
  local label=$1
  shift
  local b_secs="" b_busy b_srv b_self b_child hwm=0
  for ((RUN_N = 1; RUN_N <= BENCH_REPEAT; RUN_N++)); do
    measure "$label.$RUN_N" "$@"
    [[ -z ${BEST_AFTER:-} ]] || eval "$BEST_AFTER"
    if [[ -z $b_secs ]] || (($(calc "$M_SECS < $b_secs" 0))); then
      b_secs=$M_SECS b_busy=$M_SYS_BUSY b_srv=$M_SRV_CPU b_self=$M_SELF_CPU b_child=$M_CHILD_CPU
    fi
    (($(calc "$M_HWM_MIB > $hwm" 0))) && hwm=$M_HWM_MIB
  done
  M_SECS=$b_secs M_SYS_BUSY=$b_busy M_SRV_CPU=$b_srv M_SELF_CPU=$b_self M_CHILD_CPU=$b_child
  M_HWM_MIB=$hwm
  LAST_OUT=$WORK/$label.$BENCH_REPEAT.out
}

mbps() { calc "$1 / 1000000 / $2" 1; } # BYTES SECS

# ---------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway cluster tuned for speed, password auth over TCP
PGPORT=$(free_port)
PGUSER=bench
PGPASSWORD=$("$PY" -c 'import secrets; print(secrets.token_hex(12))')
export PGUSER PGPASSWORD PGHOST=127.0.0.1 PGPORT
export PATH=$PG_BIN_DIR:$PATH PG_BIN_DIR
mkdir -p "$PGDATA"
echo "$PGPASSWORD" >"$WORK/pwfile"
chown postgres "$PGDATA" "$WORK/pwfile"
log "initdb (port $PGPORT)"
runuser -u postgres -- "$PG_BIN_DIR/initdb" -D "$PGDATA" -U "$PGUSER" --pwfile="$WORK/pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 ||
  { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
rm -f "$WORK/pwfile"
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGDATA'
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
shared_buffers = 1GB
maintenance_work_mem = 512MB
max_wal_size = 4GB
checkpoint_timeout = 30min
autovacuum = off
EOF
runuser -u postgres -- "$PG_BIN_DIR/pg_ctl" -D "$PGDATA" -l "$PGDATA/postgres.log" -w start >/dev/null ||
  { tail -20 "$PGDATA/postgres.log" >&2; die "postgres did not start"; }
PG_STARTED=1
db_url() { echo "postgres://$PGUSER:$PGPASSWORD@127.0.0.1:$PGPORT/$1"; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -d postgres -At -c "$1"; }

# ---------------------------------------------------------------------------------------------
# S3 endpoints
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=$WORK/aws-config
export AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-credentials AWS_EC2_METADATA_DISABLED=true
: >"$AWS_CONFIG_FILE"
: >"$AWS_SHARED_CREDENTIALS_FILE"
declare -A EP_URL EP_PID
BUCKET=bench

wait_http() { # URL PID
  local i
  for ((i = 0; i < 150; i++)); do
    curl -s -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

start_endpoint() {
  local name=$1 port pid
  port=$(free_port)
  case $name in
    moto)
      "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
      pid=$!
      ;;
    s3s)
      mkdir -p "$WORK/s3s-root"
      "$S3S_FS" --host 127.0.0.1 --port "$port" --access-key testing --secret-key testing \
        "$WORK/s3s-root" >"$WORK/s3s.log" 2>&1 &
      pid=$!
      ;;
  esac
  SERVER_PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/" "$pid" || { tail -20 "$WORK/$name.log" >&2; die "$name did not start"; }
  EP_URL[$name]=http://127.0.0.1:$port
  EP_PID[$name]=$pid
  "$AWS" --endpoint-url "${EP_URL[$name]}" s3 mb "s3://$BUCKET" >/dev/null
  log "$name listening on ${EP_URL[$name]} (pid $pid)"
}

for e in "${ENDPOINTS[@]}"; do start_endpoint "$e"; done

# ---------------------------------------------------------------------------------------------
# The benchmark
declare -a RESULTS TABLE LEVELS
DUMP_ARGS=(-Fc -Z6 --no-password)

for size in $SIZES; do
  db=src_s$size
  log "=== size $size: pgbench -i -s $size into $db"
  sql "DROP DATABASE IF EXISTS $db" && sql "CREATE DATABASE $db"
  t0=$(now)
  pgbench -i -s "$size" -I dtGvp -q "$db" >"$WORK/pgbench.log" 2>&1 ||
    { tail -20 "$WORK/pgbench.log" >&2; die "pgbench -i failed"; }
  if ((BENCH_RANDOM_MIB_PER_SCALE > 0)); then
    # Incompressible payload, so the archive is large and the upload path does real work
    # (pgbench's own tables compress about 50:1). 1 KiB random bytea per row.
    rnd_rows=$((size * BENCH_RANDOM_MIB_PER_SCALE * 1024))
    expr=$(printf 'md5(random()::text)||%.0s' {1..64})
    psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
      -c "CREATE TABLE bench_random (id bigint PRIMARY KEY, payload bytea);
          ALTER TABLE bench_random ALTER payload SET STORAGE EXTERNAL;
          INSERT INTO bench_random SELECT g, decode(${expr%||}, 'hex') FROM generate_series(1, $rnd_rows) g;" \
      -c "VACUUM ANALYZE bench_random" >"$WORK/random.log" 2>&1 || { cat "$WORK/random.log" >&2; die "random payload failed"; }
  fi
  sql "CHECKPOINT"
  db_bytes=$(sql "SELECT pg_database_size('$db')")
  log "  generated $(calc "$db_bytes / 1048576" 0) MiB in $(calc "$(now) - $t0" 0)s"

  M_SRV_PID=""
  # The archive itself (also warms the page cache): its size is every throughput's basis and
  # the file is pg_restore's input.
  dump_file=$WORK/s$size.dump
  measure "s$size-dumpfile" bash -c 'exec pg_dump "$@" > "$0"' "$dump_file" "${DUMP_ARGS[@]}" "$db"
  dump_bytes=$(stat -c %s "$dump_file")
  dump_mb=$(calc "$dump_bytes / 1000000" 1)
  log "  archive: $dump_bytes bytes ($dump_mb MB) from $(calc "$db_bytes / 1048576" 0) MiB of database"

  best "s$size-c" bash -c 'exec pg_dump "$@" > /dev/null' _ "${DUMP_ARGS[@]}" "$db"
  c_secs=$M_SECS c_mbps=$(mbps "$dump_bytes" "$M_SECS") c_busy=$M_SYS_BUSY c_cpu=$M_SELF_CPU

  # (c0) the COPY limit: pg_dump without compression, into nothing.
  best "s$size-c0" bash -c 'exec pg_dump -Fc -Z0 --no-password "$@" > /dev/null' _ "$db"
  c0_secs=$M_SECS c0_mbps=$(mbps "$dump_bytes" "$M_SECS")

  # Control for (a) and (b): the same dump through a pipe into a reader that does nothing.
  best "s$size-c_pipe" bash -o pipefail -c 'pg_dump "$@" | cat > /dev/null' _ "${DUMP_ARGS[@]}" "$db"
  cp_mbps=$(mbps "$dump_bytes" "$M_SECS") cp_secs=$M_SECS

  # Control for (a): backstop counts every table's rows (in the dump's snapshot) while pg_dump
  # runs. The same counts next to a plain pg_dump show what that check costs on this machine.
  tables=$(psql -X -At -d "$db" -c "SELECT quote_ident(relname) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1")
  best "s$size-c_counts" bash -c 'pg_dump "${@:2}" > /dev/null & p=$!
    for t in $0; do psql -X -q -At -d "${@: -1}" -c "SELECT count(*) FROM ONLY public.$t" > /dev/null || exit 1; done
    wait $p' "$tables" "${DUMP_ARGS[@]}" "$db"
  cc_mbps=$(mbps "$dump_bytes" "$M_SECS") cc_secs=$M_SECS

  # pg_restore from the local file into a new database (create included, like backstop's swap).
  rdb=rpg_s$size
  sql "DROP DATABASE IF EXISTS $rdb"
  # After each run: time backstop's post-restore check (row counts) on the result, then drop it.
  BEST_AFTER='t0=$(now)
    for t in $tables; do psql -X -q -At -d "$rdb" -c "SELECT count(*) FROM ONLY public.$t" >/dev/null; done
    count_secs=$(calc "$(now) - $t0" 2)
    sql "DROP DATABASE $rdb"'
  best "s$size-pg_restore" bash -c 'createdb --no-password "$1" && exec pg_restore --exit-on-error --no-password -d "$1" "$0"' \
    "$dump_file" "$rdb"
  BEST_AFTER=""
  pgr_secs=$M_SECS pgr_mbps=$(mbps "$dump_bytes" "$M_SECS")

  for ep in "${ENDPOINTS[@]}"; do
    url=${EP_URL[$ep]}
    M_SRV_PID=${EP_PID[$ep]}
    log "--- size $size on $ep ($url)"
    export AWS_ENDPOINT_URL=$url

    # (d) the endpoint's ingest and egress, for the same bytes.
    best "s$size-$ep-d_aws" "$AWS" --endpoint-url "$url" s3 cp --only-show-errors "$dump_file" "s3://$BUCKET/ingest/s$size-aws"
    d_aws_mbps=$(mbps "$dump_bytes" "$M_SECS") d_aws_srv=$M_SRV_CPU
    best "s$size-$ep-d_curl" curl -sS -f -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user testing:testing \
      -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -T "$dump_file" "$url/$BUCKET/ingest/s$size-curl"
    d_curl_mbps=$(mbps "$dump_bytes" "$M_SECS") d_curl_srv=$M_SRV_CPU
    best "s$size-$ep-get_curl" curl -sS -f -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user testing:testing \
      -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$url/$BUCKET/ingest/s$size-curl"
    get_mbps=$(mbps "$dump_bytes" "$M_SECS")
    "$AWS" --endpoint-url "$url" s3 rm --only-show-errors --recursive "s3://$BUCKET/ingest/"
    ingest_mbps=$(calc "($d_aws_mbps > $d_curl_mbps) ? $d_aws_mbps : $d_curl_mbps" 1)

    # (b) pg_dump | aws s3 cp -
    best "s$size-$ep-b" bash -o pipefail -c 'pg_dump "${@:3}" | "$0" --endpoint-url "$1" s3 cp --only-show-errors - "$2"' \
      "$AWS" "$url" "s3://$BUCKET/awscli/s$size.dump" "${DUMP_ARGS[@]}" "$db"
    b_secs=$M_SECS b_mbps=$(mbps "$dump_bytes" "$M_SECS") b_busy=$M_SYS_BUSY b_srv=$M_SRV_CPU
    "$AWS" --endpoint-url "$url" s3 rm --only-show-errors --recursive "s3://$BUCKET/awscli/"

    # (a) backstop db backup
    # The password goes through the environment, never argv.
    export BACKSTOP_DATABASE_URL=$(db_url "$db")
    # Each level of Backstop's own zstd; the first is the table's (and the restore's).
    LEVELS_LINE=""
    first_level=""
    for level in $BENCH_STREAM_LEVELS; do
      best "s$size-$ep-a$level" "$BACKSTOP" db backup --bucket "$BUCKET" --compression "stream-zstd:$level" --json
      read -r l_id l_bytes < <("$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["backup_id"], m["databases"][0]["artifact"]["bytes"])' "$LAST_OUT")
      LEVELS_LINE+=" zstd$level: $(calc "$c0_secs / $M_SECS" 3) of the COPY limit, $(calc "$l_bytes / $dump_bytes" 3) of pg_dump -Fc's size, ${M_HWM_MIB} MiB;"
      if [[ -z $first_level ]]; then
        first_level=$level
        a_secs=$M_SECS a_mbps=$(mbps "$dump_bytes" "$M_SECS") a_busy=$M_SYS_BUSY a_srv=$M_SRV_CPU
        a_rss=$M_HWM_MIB a_cpu=$M_SELF_CPU a_child_cpu=$M_CHILD_CPU
        backup_id=$l_id a_bytes=$l_bytes
      fi
    done
    LEVELS+=("size $size on $ep:$LEVELS_LINE")

    # restore: backstop db restore into a database that does not exist yet (swap: restore, rename)
    rdb=rbs_s${size}_$ep
    sql "DROP DATABASE IF EXISTS $rdb"
    export BACKSTOP_DATABASE_URL=$(db_url "$rdb")
    BEST_AFTER='sql "DROP DATABASE $rdb"'
    best "s$size-$ep-restore" "$BACKSTOP" db restore --bucket "$BUCKET" --backup-id "$backup_id" --mode swap --json
    BEST_AFTER=""
    r_secs=$M_SECS r_mbps=$(mbps "$a_bytes" "$M_SECS") r_rss=$M_HWM_MIB r_cpu=$M_SELF_CPU r_srv=$M_SRV_CPU

    a_over_b=$(calc "$a_mbps / $b_mbps" 3)
    a_over_c=$(calc "$a_mbps / $c_mbps" 3)
    # Against the COPY limit (same database, time ratio) and pg_dump -Fc's archive size.
    a_over_c0=$(calc "$c0_secs / $a_secs" 3)
    size_ratio=$(calc "$a_bytes / $dump_bytes" 3)
    # Restore against pg_restore from a local file: time ratio (the archives differ in size).
    r_ratio=$(calc "$pgr_secs / $r_secs" 3)
    RESULTS+=("RESULT size=$size random_mib=$((size * BENCH_RANDOM_MIB_PER_SCALE)) endpoint=$ep stream_level=$first_level dump_bytes=$dump_bytes backstop_bytes=$a_bytes size_ratio=$size_ratio c0_mbps=$c0_mbps a_over_c0=$a_over_c0 c0_s=$c0_secs db_mib=$(calc "$db_bytes / 1048576" 0) a_mbps=$a_mbps b_mbps=$b_mbps c_mbps=$c_mbps a_over_b=$a_over_b a_over_c=$a_over_c c_pipe_mbps=$cp_mbps a_over_c_pipe=$(calc "$a_mbps / $cp_mbps" 3) c_with_counts_mbps=$cc_mbps a_over_c_with_counts=$(calc "$a_mbps / $cc_mbps" 3) backup_peak_rss_mib=$a_rss restore_mbps=$r_mbps pg_restore_mbps=$pgr_mbps restore_ratio=$r_ratio restore_peak_rss_mib=$r_rss endpoint_ingest_mbps=$ingest_mbps endpoint_ingest_awscli_mbps=$d_aws_mbps endpoint_ingest_curl_mbps=$d_curl_mbps endpoint_get_curl_mbps=$get_mbps a_s=$a_secs b_s=$b_secs c_s=$c_secs c_pipe_s=$cp_secs c_with_counts_s=$cc_secs restore_s=$r_secs pg_restore_s=$pgr_secs rowcount_s=$count_secs backstop_backup_cpu_s=$a_cpu backstop_pg_dump_cpu_s=$a_child_cpu pg_dump_cpu_s=$c_cpu backstop_restore_cpu_s=$r_cpu machine_busy_pct_a=$a_busy machine_busy_pct_b=$b_busy machine_busy_pct_c=$c_busy endpoint_cpu_pct_a=$a_srv endpoint_cpu_pct_b=$b_srv endpoint_cpu_pct_restore=$r_srv")
    TABLE+=("$(printf '%-5s %-5s %8s | %8s %8s %8s %8s %6s %6s %6s | %8s %8s %6s | %8s %8s | %7s %7s' \
      "$size" "$ep" "$dump_mb" "$a_mbps" "$b_mbps" "$c_mbps" "$c0_mbps" "$a_over_c0" "$size_ratio" "$a_over_c" \
      "$r_secs" "$pgr_secs" "$r_ratio" "$a_rss" "$r_rss" "$d_aws_mbps" "$d_curl_mbps")")
  done
  rm -f "$dump_file"
  sql "DROP DATABASE $db"
done

# ---------------------------------------------------------------------------------------------
{
  echo
  echo "Backstop benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $NCPU cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(pg_dump --version), load avg at start $LOAD0, gzip level 6, best of $BENCH_REPEAT, random MiB per scale $BENCH_RANDOM_MIB_PER_SCALE, backstop $GIT_REV"
  echo "MB/s = archive bytes (pg_dump -Fc -Z6) / wall seconds, MB = 10^6 bytes; RSS = peak VmHWM of the backstop process, MiB"
  echo "a = backstop db backup -> S3 (pg_dump -Z0 + Backstop's zstd, level ${BENCH_STREAM_LEVELS%% *}); b = pg_dump -Z6 | aws s3 cp - -> S3; c = pg_dump -Z6 > /dev/null; c0 = pg_dump -Z0 > /dev/null (the COPY limit)"
  echo "a/c0 = c0 seconds / a seconds (goal >= 0.9); size = a's object / pg_dump -Fc's file (goal <= 1.0); a/c = against pg_dump's own gzip"
  echo "rst_s = backstop db restore (swap into a new db, incl. row counts); pgr_s = createdb + pg_restore -d from the local -Fc file; ratio = pgr_s / rst_s (goal >= 1.0)"
  echo "ingest = the endpoint alone: aws s3 cp FILE / curl PUT FILE of the same bytes"
  echo
  printf '%-5s %-5s %8s | %8s %8s %8s %8s %6s %6s %6s | %8s %8s %6s | %8s %8s | %7s %7s\n' \
    scale s3 dump_MB a_MB/s b_MB/s c_MB/s c0_MB/s a/c0 size a/c rst_s pgr_s ratio rss_bk rss_rst awscli curl
  printf '%s\n' "${TABLE[@]}"
  echo
  echo "Backstop's zstd by level (first = the table's):"
  printf '  %s\n' "${LEVELS[@]}"
  echo
  printf '%s\n' "${RESULTS[@]}"
} | tee "$WORK/summary.txt"
mkdir -p "$BENCH/results"
cp "$WORK/summary.txt" "$BENCH/results/$(date -u +%Y%m%dT%H%M%SZ).txt"
