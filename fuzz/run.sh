#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 60), one after the other, on the local corpus
# (fuzz/corpus/<target>, not committed; it starts from the committed seeds in fuzz/seeds/<target> and grows).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without nightly the stable one is
# used with RUSTC_BOOTSTRAP=1. A crash stops that target, leaves the input in fuzz/artifacts/<target>/ and
# makes the script exit 1 after the remaining targets ran. Reproduce with `cargo fuzz run <target> <file>`.
set -uo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(creds_parse token_answer retry_after url_and_headers)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 2
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
else
  echo "(no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1)"
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

"${fuzz[@]}" build -O || exit 2

failed=()
summary=()
for t in "${targets[@]}"; do
  # libFuzzer adds what it finds to the corpus directories it is given: start the local corpus from the
  # seeds and give it only that one, so the committed seeds never change.
  mkdir -p "corpus/$t"
  cp -n "seeds/$t"/* "corpus/$t"/ 2>/dev/null || true
  log="$(mktemp)"
  echo "== $t for ${seconds}s"
  "${fuzz[@]}" run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  runs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    grep -E 'panicked|ERROR|SUMMARY|artifact' "$log" | head -20
    summary+=("$t: CRASH after ${runs:-?} runs (log: $log)")
  else
    summary+=("$t: clean, ${runs:-?} runs in ${seconds}s")
    rm -f "$log"
  fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
[ ${#failed[@]} -eq 0 ]
