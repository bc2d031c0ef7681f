#!/usr/bin/env bash
# Regenerate the lock files with uv (pip install -e ".[dev]" provides it):
#   requirements.lock        the package, its dev and tracking extras and lock/runtime.in,
#                            every transitive dependency pinned (install with --no-deps)
#   requirements-bench.lock  lock/bench.in (test/benchmark-only references, --no-deps)
# for CPython 3.11 on x86_64 Linux. uv keeps the versions already in requirements.lock;
# pass --upgrade (or --upgrade-package NAME) to move them, then run the tests.
# torch comes from TORCH_WHEELS (a folder holding torch-2.13.0+cpu) when it exists,
# else from the PyTorch CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_WHEELS=${TORCH_WHEELS:-/opt/wheels}
if compgen -G "$TORCH_WHEELS/torch-2.13.0+cpu-*.whl" >/dev/null; then
    torch_source=(--find-links "$TORCH_WHEELS" --no-emit-find-links)
else
    torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
                  --no-emit-index-url)
fi
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --override lock/overrides.txt
        --custom-compile-command "lock/compile.sh  (then: pip install --no-deps -r <this file>)"
        "${torch_source[@]}")
uv pip compile pyproject.toml lock/runtime.in --extra dev --extra tracking "${common[@]}" -o requirements.lock "$@"
uv pip compile lock/bench.in --no-deps "${common[@]}" -o requirements-bench.lock "$@"
