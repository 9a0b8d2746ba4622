#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s in all, shared), seeded with the project's
# fixtures where they fit (wire from fuzz/seeds; events and state grow their corpora from nothing,
# kept between runs). `fuzz/run.sh build` only builds the targets.
# Installs cargo-fuzz (pinned, --locked) under $HOME/.cache/updraft/cargo-tools if missing. The stable toolchain is used with
# RUSTC_BOOTSTRAP=1, which cargo-fuzz's sanitizer flags need.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
total=${1:-60}
tools="$HOME/.cache/updraft/cargo-tools"
cargo_fuzz_version=0.13.2
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $cargo_fuzz_version\$"; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version into $tools" >&2
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --root "$tools" >&2
fi
export PATH="$tools/bin:$PATH" RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$HOME/.cache/updraft/fuzz-target"
if [ "$total" = build ]; then
  cd "$here"
  exec cargo fuzz build
fi
corpus="$HOME/.cache/updraft/fuzz-corpus"
targets=(package yaml events state wire)
for t in "${targets[@]}"; do mkdir -p "$corpus/$t"; done
cp "$here"/../tests/fixtures/flytekit/*.tgz "$corpus/package/"
cp "$here"/../tests/fixtures/yaml/*.yaml "$here"/../examples/*.yaml "$corpus/yaml/"
cp "$here"/seeds/wire/* "$corpus/wire/"
per=$(( total / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1
cd "$here"
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${per}s" >&2
  log="$HOME/.cache/updraft/fuzz-$target.log"
  status=0
  cargo fuzz run "$target" "$corpus/$target" -- -max_total_time="$per" -max_len=262144 -rss_limit_mb=2048 \
    -print_final_stats=1 > "$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)|panicked|ERROR' "$log" >&2 || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed (exit $status); crash inputs are in $here/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: no crashes" >&2
