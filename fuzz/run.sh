#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 30) on the nightly toolchain, starting
# from the corpus kept in fuzz/corpus/<target> (new inputs that reach new code are added there;
# `cargo +nightly fuzz cmin <target>` minimizes it before a commit). A crash stops the run with the
# input in fuzz/artifacts/<target>/; reproduce it with `cargo +nightly fuzz run <target> <file>`
# and turn it into a regression test beside the code it broke.
#   fuzz/run.sh            # 30 s per target
#   fuzz/run.sh 600        # the longer run on demand
#   fuzz/run.sh 20 stomp   # one target
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-30}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(command_body envelope stomp query_params named_query)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "run.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build -O
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  echo "=== fuzz $t for ${SECONDS_EACH}s"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|thread)' || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a crash: $(ls "artifacts/$t")" >&2
    exit 1
  fi
done
