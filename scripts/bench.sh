#!/usr/bin/env bash
# bench.sh — what does profiling cost? The `churn` demo (many short-lived allocations) timed
# plain and under each profiler, side by side:
#
#   plain       the same workload without stackheap (`churn_system`, the system allocator)
#   dormant     stackheap installed as global allocator but not profiling (no STACKHEAP_TRACE)
#   counters    stackheap recording, STACKHEAP_SAMPLE=0       (exact counters, no stacks)
#   sampled     stackheap recording, STACKHEAP_SAMPLE=524288  (stacks, mean 512 KiB sampling)
#   full        stackheap recording, STACKHEAP_SAMPLE=1       (a stack for every allocation)
#   heaptrack   heaptrack (LD_PRELOAD) on the plain binary
#   dhat-rs     the same workload built as `churn_dhat`, with dhat::Alloc as global allocator
#   valgrind    valgrind --tool=dhat on the plain binary (opt-in: BENCH_VALGRIND=1; slow)
#
# Modes run alternately, round after round, so a noisy neighbour hurts all of them alike; the
# table shows the median wall time, the ratio to plain, and for stackheap-full the trace size
# per event (allocation or free). A tool that is not installed gets a "skipped" row.
# This is a benchmark, not a test: it never fails on a slow result.
#
# Environment:
#   BENCH_ROUNDS=5          rounds (each mode runs once per round)
#   BENCH_ARGS="..."        churn arguments (default: churn's defaults, see `churn --help`)
#   BENCH_VALGRIND=1        add the valgrind row
#   BENCH_KEEP=1            keep the scratch directory (traces, outputs) and print its path
#   CARGO                   cargo binary (default: cargo)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

rounds=${BENCH_ROUNDS:-5}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
    echo "bench.sh: error: BENCH_ROUNDS must be a positive integer, got '$rounds'" >&2
    exit 2
fi
read -r -a workload <<<"${BENCH_ARGS:-}"
cargo=${CARGO:-cargo}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stackheap-bench.XXXXXX")
cleanup() {
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "bench.sh: kept scratch directory $tmp" >&2
    else
        rm -rf -- "$tmp"
    fi
}
trap cleanup EXIT

log() { printf 'bench.sh: %s\n' "$*" >&2; }

# build PKG-ARGS... -> copies the built executable named $1 to $tmp/bin/$1.
# The path comes from cargo's JSON messages, so CARGO_TARGET_DIR and friends are honoured.
# The copy pins the binary: a later build with other features cannot change what we time.
build() {
    local name=$1
    shift
    local exe
    exe=$("$cargo" build --release -p stackheap-demos --bin "$name" "$@" \
        --message-format=json-render-diagnostics |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [[ -n $exe && -x $exe ]] || return 1
    mkdir -p "$tmp/bin"
    cp -- "$exe" "$tmp/bin/$name"
}

log "building churn and churn_system (release)"
build churn
churn=$tmp/bin/churn
build churn_system
churn_system=$tmp/bin/churn_system

churn_dhat=
if build churn_dhat --features dhat-heap; then
    churn_dhat=$tmp/bin/churn_dhat
else
    log "could not build churn_dhat (feature dhat-heap); the dhat-rs row is skipped"
fi

have() { command -v "$1" >/dev/null 2>&1; }

# Rows, in display order. skip[mode] holds the reason a row is not run.
modes=(plain dormant counters sampled full heaptrack dhat-rs valgrind)
declare -A skip=() times=() notes=()
have heaptrack || skip[heaptrack]="skipped (not installed)"
[[ -n $churn_dhat ]] || skip[dhat-rs]="skipped (churn_dhat did not build)"
if [[ ${BENCH_VALGRIND:-0} != 1 ]]; then
    skip[valgrind]="skipped (opt-in: BENCH_VALGRIND=1)"
elif ! have valgrind; then
    skip[valgrind]="skipped (not installed)"
fi

# Clean environment for every run: no inherited STACKHEAP_* settings.
base_env=(env -u STACKHEAP_TRACE -u STACKHEAP_SAMPLE)

# run_mode MODE ROUND: runs one timed run; prints elapsed nanoseconds on stdout.
run_mode() {
    local mode=$1 r=$2
    local out=$tmp/out/$mode.$r
    local -a cmd
    case $mode in
    plain) cmd=("${base_env[@]}" "$churn_system") ;;
    dormant) cmd=("${base_env[@]}" "$churn") ;;
    counters) cmd=("${base_env[@]}" STACKHEAP_TRACE="$tmp/traces/counters.$r.trace" STACKHEAP_SAMPLE=0 "$churn") ;;
    sampled) cmd=("${base_env[@]}" STACKHEAP_TRACE="$tmp/traces/sampled.$r.trace" STACKHEAP_SAMPLE=524288 "$churn") ;;
    full) cmd=("${base_env[@]}" STACKHEAP_TRACE="$tmp/traces/full.$r.trace" STACKHEAP_SAMPLE=1 "$churn") ;;
    heaptrack) cmd=("${base_env[@]}" heaptrack -o "$tmp/traces/heaptrack.$r" "$churn_system") ;;
    dhat-rs) cmd=("${base_env[@]}" "$churn_dhat") ;;
    valgrind) cmd=("${base_env[@]}" valgrind --tool=dhat --dhat-out-file="$tmp/traces/vg.$r.json" "$churn_system") ;;
    esac
    mkdir -p "$tmp/run/$mode.$r"
    local t0 t1 rc=0
    t0=$(date +%s%N)
    (cd "$tmp/run/$mode.$r" && "${cmd[@]}" "${workload[@]}") >"$out.stdout" 2>"$out.stderr" || rc=$?
    t1=$(date +%s%N)
    if ((rc != 0)); then
        log "$mode (round $r) exited with status $rc; see stderr below"
        tail -n 5 "$out.stderr" >&2 || true
        return 1
    fi
    echo $((t1 - t0))
}

mkdir -p "$tmp/out" "$tmp/traces"
log "workload: churn ${workload[*]:-(defaults)}; $rounds round(s)"
full_trace_bytes=()
for ((r = 1; r <= rounds; r++)); do
    for mode in "${modes[@]}"; do
        [[ -z ${skip[$mode]:-} ]] || continue
        if ns=$(run_mode "$mode" "$r"); then
            times[$mode]+="$ns "
        else
            notes[$mode]="failed in round $r"
        fi
        # Keep disk use bounded: measure, then delete the traces of this run.
        if [[ $mode == full ]]; then
            size=$(du -cb "$tmp/traces/full.$r.trace"* 2>/dev/null | tail -n 1 | cut -f1 || true)
            [[ -n $size && $size != 0 ]] && full_trace_bytes+=("$size")
        fi
        [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf -- "$tmp/traces/"* "$tmp/run/$mode.$r"
    done
    log "round $r/$rounds done"
done

# median of the numbers given as arguments
median() {
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# The workload's own event count, from the `expected:` line of a plain run.
expected_line=$(grep -h '^expected:' "$tmp"/out/plain.*.stdout 2>/dev/null | head -n 1 || true)
get_expected() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$expected_line"; }
allocs=$(get_expected total_allocs)
frees=$(get_expected total_frees)

plain_ns=
if [[ -n ${times[plain]:-} ]]; then
    # shellcheck disable=SC2086 # word splitting of the list of times is intended
    plain_ns=$(median ${times[plain]})
fi

echo
echo "churn ${workload[*]:-(defaults)} — $rounds round(s), median wall time"
[[ -n $expected_line ]] && echo "workload: $expected_line"
printf '%-11s %12s %10s   %s\n' mode "median (s)" "vs plain" "runs (s) / notes"
printf '%-11s %12s %10s   %s\n' ----------- ------------ ---------- ----------------
for mode in "${modes[@]}"; do
    if [[ -n ${skip[$mode]:-} ]]; then
        printf '%-11s %12s %10s   %s\n' "$mode" - - "${skip[$mode]}"
        continue
    fi
    if [[ -z ${times[$mode]:-} ]]; then
        printf '%-11s %12s %10s   %s\n' "$mode" - - "${notes[$mode]:-no successful run}"
        continue
    fi
    # shellcheck disable=SC2086
    med=$(median ${times[$mode]})
    runs=$(for t in ${times[$mode]}; do awk -v t="$t" 'BEGIN { printf "%.3f ", t / 1e9 }'; done)
    runs=${runs% }
    ratio=-
    if [[ -n $plain_ns ]]; then
        ratio=$(awk -v a="$med" -v b="$plain_ns" 'BEGIN { printf "%.2fx", a / b }')
    fi
    note=${notes[$mode]:-}
    printf '%-11s %12s %10s   %s%s\n' "$mode" "$(awk -v t="$med" 'BEGIN { printf "%.3f", t / 1e9 }')" \
        "$ratio" "$runs" "${note:+ ($note)}"
done

echo
if ((${#full_trace_bytes[@]} > 0)) && [[ -n $allocs && -n $frees ]]; then
    tb=$(median "${full_trace_bytes[@]}")
    events=$((allocs + frees))
    awk -v b="$tb" -v e="$events" 'BEGIN {
        printf "stackheap full trace: %d bytes for %d events (allocs + frees of the churn loop) = %.2f bytes/event\n", b, e, b / e }'
elif [[ -z ${skip[full]:-} ]]; then
    echo "stackheap full trace: no trace file written (profiler dormant or not finished?)"
fi
