#!/usr/bin/env bash
# bench.sh — what does profiling cost? Four workloads (demo-apps), each timed plain and
# under each profiler, side by side:
#
#   churn       `churn`: short-lived allocations (alloc, touch, free) on one thread
#   churn2      the same on 2 threads
#   tree        `tree`: a BTreeMap of formatted strings built, probed, thinned, dropped
#   deepstack   `deepstack`: alloc+free pairs at the bottom of a 128-frame recursion
#
# and the modes:
#
#   plain       the workload without stackheap (`<workload>_system`, the system allocator)
#   dormant     stackheap installed as global allocator but not profiling (no STACKHEAP_TRACE)
#   counters    stackheap recording, STACKHEAP_SAMPLE=0       (exact counters, no stacks)
#   sampled     stackheap recording, STACKHEAP_SAMPLE=524288  (stacks, mean 512 KiB sampling)
#   full        stackheap recording, STACKHEAP_SAMPLE=1       (a stack for every allocation)
#   heaptrack   heaptrack (LD_PRELOAD) on the plain binary (on deepstack at the smaller size)
#   preload     "preload full": libstackheap_preload.so (LD_PRELOAD) on the plain binary,
#               STACKHEAP_SAMPLE=1 — the same fidelity as heaptrack, run beside it; its
#               row also shows its ratio over heaptrack's (target: at most 0.5)
#   dhat-rs     `<workload>_dhat` (dhat::Alloc) — at a smaller size, against plain at that size
#   massif      valgrind --tool=massif on the plain binary — smaller size too (opt-in: BENCH_MASSIF=1)
#
# Modes run alternately, round after round, so a noisy neighbour hurts all of them alike.
# Per workload the table shows the median wall time, the median ratio to plain, the wall
# time per allocation and what the mode adds per allocation. Then, per workload: the
# profiler's own memory in full mode (peak RSS beyond the plain run's, /usr/bin/time %M),
# the full-mode trace bytes per event (allocation or free), and how long `stackheap report`
# takes on the full-mode trace against the traced program's own time.
# A tool that is not installed gets a "skipped" row. This is a benchmark, not a test: it
# never fails on a slow result.
#
# Usage: scripts/bench.sh [--quick | --smoke] [WORKLOAD...]
#   --quick     a minute or two: smaller sizes, 3 rounds (also BENCH_QUICK=1)
#   --smoke     tiny sizes, 1 round: only checks that everything runs (CI)
#   WORKLOAD    any of churn churn2 tree deepstack (default: all)
#
# Environment:
#   BENCH_ROUNDS=N          rounds (each mode runs once per round; default 5, quick 3, smoke 1)
#   BENCH_MASSIF=1          add the massif row (slow)
#   BENCH_HEAPTRACK=0       leave heaptrack out even if installed (--smoke does)
#   BENCH_KEEP=1            keep the scratch directory (traces, outputs) and print its path
#   CARGO                   cargo binary (default: cargo)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

size=full
[[ ${BENCH_QUICK:-0} == 1 ]] && size=quick
selected=()
for arg in "$@"; do
    case $arg in
    --quick) size=quick ;;
    --smoke) size=smoke ;;
    churn | churn2 | tree | deepstack) selected+=("$arg") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "bench.sh: error: unknown argument '$arg' (try --help)" >&2
        exit 2
        ;;
    esac
done
((${#selected[@]} > 0)) || selected=(churn churn2 tree deepstack)

case $size in
full) default_rounds=5 ;;
quick) default_rounds=3 ;;
smoke) default_rounds=1 ;;
esac
rounds=${BENCH_ROUNDS:-$default_rounds}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
    echo "bench.sh: error: BENCH_ROUNDS must be a positive integer, got '$rounds'" >&2
    exit 2
fi
cargo=${CARGO:-cargo}

# Workload arguments: main size (stackheap modes, plain, heaptrack) and the smaller size
# of the slow tools (dhat-rs, massif), per bench size.
declare -A args small
case $size in
full)
    args=([churn]="--iters 40000000" [churn2]="--iters 20000000 --threads 2"
        [tree]="--items 1750000" [deepstack]="--iters 500000")
    small=([churn]="--iters 2000000" [churn2]="--iters 1000000 --threads 2"
        [tree]="--items 400000" [deepstack]="--iters 20000")
    ;;
quick)
    args=([churn]="--iters 5000000" [churn2]="--iters 2500000 --threads 2"
        [tree]="--items 300000" [deepstack]="--iters 100000")
    small=([churn]="--iters 500000" [churn2]="--iters 250000 --threads 2"
        [tree]="--items 100000" [deepstack]="--iters 5000")
    ;;
smoke)
    args=([churn]="--iters 200000" [churn2]="--iters 100000 --threads 2"
        [tree]="--items 20000" [deepstack]="--iters 2000")
    small=([churn]="--iters 20000" [churn2]="--iters 10000 --threads 2"
        [tree]="--items 5000" [deepstack]="--iters 500")
    ;;
esac
declare -A bin_of=([churn]=churn [churn2]=churn [tree]=tree [deepstack]=deepstack)
# is_small WORKLOAD MODE: does MODE run at the smaller size? dhat-rs and massif always;
# heaptrack on deepstack too (it takes milliseconds per allocation with 130-frame stacks).
is_small() {
    case $2 in
    dhat-rs | massif | plain-small) return 0 ;;
    heaptrack) [[ $1 == deepstack ]] ;;
    *) return 1 ;;
    esac
}

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
have() { command -v "$1" >/dev/null 2>&1; }

# build PKG BIN [cargo args...] -> copies the built executable to $tmp/bin/BIN.
# The path comes from cargo's JSON messages, so CARGO_TARGET_DIR and friends are honoured.
# The copy pins the binary: a later build with other features cannot change what we time.
build() {
    local pkg=$1 name=$2
    shift 2
    local exe
    exe=$("$cargo" build --release -p "$pkg" --bin "$name" "$@" \
        --message-format=json-render-diagnostics |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [[ -n $exe && -x $exe ]] || return 1
    mkdir -p "$tmp/bin"
    cp -- "$exe" "$tmp/bin/$name"
}

log "building the workloads and the stackheap CLI (release)"
build stackheap-cli stackheap
declare -A have_dhat=()
for w in $(printf '%s\n' "${selected[@]}" | sed 's/churn2/churn/' | sort -u); do
    build stackheap-demos "$w"
    build stackheap-demos "${w}_system"
    if build stackheap-demos "${w}_dhat" --features dhat-heap; then
        have_dhat[$w]=1
    else
        log "could not build ${w}_dhat (feature dhat-heap); its dhat-rs row is skipped"
    fi
done
# The LD_PRELOAD library (a cdylib: cargo reports it under "filenames", not "executable").
preload_so=
so=$("$cargo" build --release -p stackheap-preload --message-format=json-render-diagnostics |
    grep -o '"[^"]*libstackheap_preload\.so"' | tr -d '"' | tail -n 1 || true)
if [[ -n $so && -f $so ]]; then
    mkdir -p "$tmp/bin"
    cp -- "$so" "$tmp/bin/libstackheap_preload.so"
    preload_so=$tmp/bin/libstackheap_preload.so
fi
have_time=1
[[ -x /usr/bin/time ]] || have_time=0

modes=(plain dormant counters sampled full heaptrack preload dhat-rs massif)
declare -A skip=()
[[ -n $preload_so ]] || skip[preload]="skipped (libstackheap_preload.so did not build)"
have heaptrack || skip[heaptrack]="skipped (not installed)"
if [[ ${BENCH_HEAPTRACK:-1} == 0 || ($size == smoke && -z ${BENCH_HEAPTRACK:-}) ]]; then
    skip[heaptrack]="skipped (BENCH_HEAPTRACK=0 or --smoke)"
fi
if [[ ${BENCH_MASSIF:-0} != 1 ]]; then
    skip[massif]="skipped (opt-in: BENCH_MASSIF=1)"
elif ! have valgrind; then
    skip[massif]="skipped (not installed)"
fi

# Clean environment for every run: no inherited STACKHEAP_* settings.
base_env=(env -u STACKHEAP_TRACE -u STACKHEAP_SAMPLE)

# run_mode WORKLOAD MODE ROUND: one timed run; prints "elapsed_ns peak_rss_kib" on stdout.
# Mode `plain-small` is plain at the smaller size (the baseline of dhat-rs and massif).
run_mode() {
    local w=$1 mode=$2 r=$3
    local b=$tmp/bin/${bin_of[$w]}
    local sys=$tmp/bin/${bin_of[$w]}_system
    local dir=$tmp/run/$w.$mode.$r out=$tmp/out/$w.$mode.$r
    local -a cmd wargs vars=()
    read -r -a wargs <<<"${args[$w]}"
    case $mode in
    plain) cmd=("$sys") ;;
    dormant) cmd=("$b") ;;
    # The settings go into the one `env` every run starts with: a second `env` would add
    # an exec (~0.7 ms here, 1% of churn at --quick size) that plain does not pay.
    counters) vars=(STACKHEAP_TRACE="$dir/t.trace" STACKHEAP_SAMPLE=0) cmd=("$b") ;;
    sampled) vars=(STACKHEAP_TRACE="$dir/t.trace" STACKHEAP_SAMPLE=524288) cmd=("$b") ;;
    full) vars=(STACKHEAP_TRACE="$dir/t.trace" STACKHEAP_SAMPLE=1) cmd=("$b") ;;
    heaptrack)
        cmd=(heaptrack -o "$dir/heaptrack" "$sys")
        is_small "$w" heaptrack && read -r -a wargs <<<"${small[$w]}"
        ;;
    preload) cmd=(env LD_PRELOAD="$preload_so" STACKHEAP_TRACE="$dir/t.trace" STACKHEAP_SAMPLE=1 "$sys") ;;
    plain-small)
        cmd=("$sys")
        read -r -a wargs <<<"${small[$w]}"
        ;;
    dhat-rs)
        cmd=("$tmp/bin/${bin_of[$w]}_dhat")
        read -r -a wargs <<<"${small[$w]}"
        ;;
    massif)
        cmd=(valgrind --tool=massif --massif-out-file="$dir/massif.out" "$sys")
        read -r -a wargs <<<"${small[$w]}"
        ;;
    esac
    mkdir -p "$dir"
    local -a timer=()
    ((have_time)) && timer=(/usr/bin/time -f %M -o "$out.rss")
    local t0 t1 rc=0
    t0=$(date +%s%N)
    (cd "$dir" && "${base_env[@]}" "${vars[@]}" "${timer[@]}" "${cmd[@]}" "${wargs[@]}") >"$out.stdout" 2>"$out.stderr" || rc=$?
    t1=$(date +%s%N)
    if ((rc != 0)); then
        log "$w/$mode (round $r) exited with status $rc; see stderr below"
        tail -n 5 "$out.stderr" >&2 || true
        return 1
    fi
    local rss=0
    ((have_time)) && rss=$(tail -n 1 "$out.rss" 2>/dev/null || echo 0)
    echo "$((t1 - t0)) ${rss:-0}"
}

# median of the numbers given as arguments
median() {
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# The row label of a mode.
label_of() {
    case $1 in
    preload) echo "preload full" ;;
    *) echo "$1" ;;
    esac
}
secs() { awk -v t="$1" 'BEGIN { printf "%.3f", t / 1e9 }'; }

# Sum of the blocks dhat-rs counted (its JSON's `tbk` fields): the allocations at the small size.
dhat_allocs() {
    grep -o '"tbk": *[0-9]*' "$1" 2>/dev/null | awk -F: '{ s += $2 } END { if (NR) print s }'
}

mkdir -p "$tmp/out" "$tmp/run" "$tmp/keep"
log "bench size: $size; $rounds round(s); workloads: ${selected[*]}"
summary=$tmp/summary.txt
: >"$summary"

for w in "${selected[@]}"; do
    declare -A times=() rsss=() notes=() ratio_of=()
    wmodes=(plain)
    for m in "${modes[@]:1}"; do
        [[ -n ${skip[$m]:-} ]] && continue
        if [[ $m == heaptrack && $w == deepstack && $size != full ]]; then
            notes[heaptrack]="skipped below full size (tens of seconds per run on 130-frame stacks)"
            continue
        fi
        [[ $m == dhat-rs && -z ${have_dhat[${bin_of[$w]}]:-} ]] && continue
        wmodes+=("$m")
    done
    # The slow tools run at the small size, with a plain run at that size.
    for m in "${wmodes[@]}"; do
        if is_small "$w" "$m"; then
            wmodes+=(plain-small)
            break
        fi
    done
    log "$w: ${args[$w]} (dhat-rs/massif: ${small[$w]}); modes: ${wmodes[*]}"
    for ((r = 1; r <= rounds; r++)); do
        for mode in "${wmodes[@]}"; do
            if res=$(run_mode "$w" "$mode" "$r"); then
                times[$mode]+="${res% *} "
                rsss[$mode]+="${res#* } "
            else
                notes[$mode]="failed in round $r"
            fi
            dir=$tmp/run/$w.$mode.$r
            if [[ $mode == full && -f $dir/t.trace ]]; then
                # Keep one full-mode trace (the last) for the report timing below.
                mv -f "$dir/t.trace" "$tmp/keep/$w.full.trace"
            fi
            if [[ $mode == dhat-rs && -f $dir/dhat-heap.json ]]; then
                n=$(dhat_allocs "$dir/dhat-heap.json" || true)
                [[ -n $n ]] && echo "$n" >"$tmp/keep/$w.small.allocs"
            fi
            [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf -- "$dir"
        done
        log "$w: round $r/$rounds done"
    done

    # Allocations of the workload: its `expected:` line when it has one, else the
    # full-mode trace's count (from the report below).
    expected_line=$(grep -h '^expected:' "$tmp/out/$w.plain.1.stdout" 2>/dev/null | head -n 1 || true)
    allocs=$(sed -n 's/.* total_allocs=\([0-9]*\).*/\1/p' <<<"$expected_line")
    small_line=$(grep -h '^expected:' "$tmp/out/$w.plain-small.1.stdout" 2>/dev/null | head -n 1 || true)
    small_allocs=$(sed -n 's/.* total_allocs=\([0-9]*\).*/\1/p' <<<"$small_line")
    [[ -n $small_allocs ]] || small_allocs=$(cat "$tmp/keep/$w.small.allocs" 2>/dev/null || true)

    # Report on the kept full-mode trace: its time and memory, and the trace's totals.
    report_ns= report_rss= trace_bytes= events=
    trace=$tmp/keep/$w.full.trace
    if [[ -f $trace ]]; then
        trace_bytes=$(du -cb "$trace"* | tail -n 1 | cut -f1)
        rm -rf "$tmp/report"
        rtimer=()
        ((have_time)) && rtimer=(/usr/bin/time -f %M -o "$tmp/report.rss")
        t0=$(date +%s%N)
        if "${base_env[@]}" "${rtimer[@]}" "$tmp/bin/stackheap" report "$trace" --out "$tmp/report" >/dev/null 2>"$tmp/report.stderr"; then
            t1=$(date +%s%N)
            report_ns=$((t1 - t0))
            report_rss=$(tail -n 1 "$tmp/report.rss" 2>/dev/null || true)
            j=$tmp/report/summary.json
            ta=$(grep -o '"total_allocs": *[0-9]*' "$j" | head -n 1 | grep -o '[0-9]*$' || true)
            tf=$(grep -o '"total_frees": *[0-9]*' "$j" | head -n 1 | grep -o '[0-9]*$' || true)
            [[ -n $ta && -n $tf ]] && events=$((ta + tf))
            [[ -n $allocs ]] || allocs=$ta
        else
            log "$w: stackheap report failed:"
            tail -n 5 "$tmp/report.stderr" >&2 || true
        fi
        [[ ${BENCH_KEEP:-0} == 1 ]] || rm -f -- "$trace"*
    fi

    plain_ns= small_ns=
    # shellcheck disable=SC2086 # word splitting of the lists of times is intended
    [[ -n ${times[plain]:-} ]] && plain_ns=$(median ${times[plain]})
    # shellcheck disable=SC2086
    [[ -n ${times[plain-small]:-} ]] && small_ns=$(median ${times[plain-small]})

    {
        echo
        echo "== $w: ${args[$w]} — $size size, $rounds round(s), medians"
        [[ -n $expected_line ]] && echo "   workload: $expected_line"
        [[ -n $allocs ]] && echo "   allocations: $allocs (at the smaller size ${small[$w]}: ${small_allocs:-?})"
        printf '%-12s %10s %9s %10s %10s   %s\n' mode "median (s)" "vs plain" "ns/alloc" "+ns/alloc" "runs (s) / notes"
        printf '%-12s %10s %9s %10s %10s   %s\n' ------------ ---------- --------- ---------- ---------- ----------------
        for mode in "${modes[@]}" plain-small; do
            if [[ -n ${skip[$mode]:-} ]]; then
                printf '%-12s %10s %9s %10s %10s   %s\n' "$(label_of "$mode")" - - - - "${skip[$mode]}"
                continue
            fi
            [[ $mode == plain-small && -z ${times[plain-small]:-} ]] && continue
            if [[ -z ${times[$mode]:-} ]]; then
                printf '%-12s %10s %9s %10s %10s   %s\n' "$(label_of "$mode")" - - - - "${notes[$mode]:-not run}"
                continue
            fi
            # Each mode against the plain run at its own size; the ratio is the median of
            # the per-round ratios (rounds alternate, so a round's runs share conditions).
            base=$plain_ns base_list=${times[plain]:-} n=$allocs
            if is_small "$w" "$mode"; then
                base=$small_ns base_list=${times[plain-small]:-} n=$small_allocs
            fi
            # shellcheck disable=SC2086
            med=$(median ${times[$mode]})
            # shellcheck disable=SC2086
            read -r -a mine <<<"${times[$mode]}"
            read -r -a theirs <<<"$base_list"
            ratios=()
            for i in "${!mine[@]}"; do
                [[ -n ${theirs[$i]:-} ]] && ratios+=("$(awk -v a="${mine[$i]}" -v b="${theirs[$i]}" 'BEGIN { print a / b }')")
            done
            ratio=-
            if ((${#ratios[@]} > 0)); then
                ratio_of[$mode]=$(median "${ratios[@]}")
                ratio=$(awk -v r="${ratio_of[$mode]}" 'BEGIN { printf "%.2fx", r }')
            fi
            per=- add=-
            if [[ -n $n && $n != 0 ]]; then
                per=$(awk -v t="$med" -v n="$n" 'BEGIN { printf "%.1f", t / n }')
                [[ -n $base ]] && add=$(awk -v t="$med" -v b="$base" -v n="$n" 'BEGIN { printf "%.1f", (t - b) / n }')
            fi
            runs=$(for t in ${times[$mode]}; do printf '%s ' "$(secs "$t")"; done)
            note=${notes[$mode]:-}
            if [[ $mode == preload && -n ${times[heaptrack]:-} ]] && is_small "$w" heaptrack; then
                note="${note:+$note; }heaptrack ran at the smaller size: ratios not comparable"
            elif [[ $mode == preload && -n ${ratio_of[preload]:-} && -n ${ratio_of[heaptrack]:-} ]]; then
                vs=$(awk -v p="${ratio_of[preload]}" -v h="${ratio_of[heaptrack]}" 'BEGIN { printf "%.2f", p / h }')
                note="${note:+$note; }$vs of heaptrack's ratio (target <= 0.5)"
            fi
            label=$(label_of "$mode")
            is_small "$w" "$mode" && label="$label*"
            printf '%-12s %10s %9s %10s %10s   %s%s\n' "$label" "$(secs "$med")" "$ratio" "$per" "$add" \
                "${runs% }" "${note:+ ($note)}"
        done
        [[ -n ${times[plain-small]:-} ]] && echo "   * at the smaller size (${small[$w]}), against plain at that size"
        if [[ -n ${rsss[full]:-} && -n ${rsss[plain]:-} ]]; then
            # shellcheck disable=SC2086
            fr=$(median ${rsss[full]})
            # shellcheck disable=SC2086
            pr=$(median ${rsss[plain]})
            awk -v f="$fr" -v p="$pr" 'BEGIN {
                printf "   full-mode memory: peak RSS %.1f MiB vs plain %.1f MiB: +%.1f MiB (%.0f%% of plain)\n",
                    f / 1024, p / 1024, (f - p) / 1024, (p > 0 ? 100 * (f - p) / p : 0) }'
        fi
        if [[ -n $trace_bytes && -n $events && $events != 0 ]]; then
            awk -v b="$trace_bytes" -v e="$events" 'BEGIN {
                printf "   full-mode trace: %d bytes for %d events (allocs + frees) = %.3f bytes/event\n", b, e, b / e }'
        fi
        if [[ -n $report_ns && -n ${times[full]:-} ]]; then
            # shellcheck disable=SC2086
            fm=$(median ${times[full]})
            awk -v r="$report_ns" -v p="$fm" -v m="${report_rss:-0}" -v e="${events:-0}" 'BEGIN {
                printf "   stackheap report on that trace: %.3f s = %.2fx the traced program (full mode, %.3f s); peak RSS %.1f MiB", r / 1e9, r / p, p / 1e9, m / 1024
                if (e > 0) printf "; %.1f ns/event", r / e
                printf "\n" }'
        fi
    } | tee -a "$summary" >&2 # progress on stderr; the whole summary on stdout at the end
    unset times rsss notes ratio_of
done

echo
echo "== summary (bench size $size, $rounds round(s); machine: $(nproc) CPU(s), $(uname -sr))"
cat "$summary"
