#!/usr/bin/env bash
# Build cnnkit's extension with AddressSanitizer + UndefinedBehaviorSanitizer
# and run the kernel, fuzz and reliability tests against it, then check that
# repeated training steps and kernel calls leak nothing (LeakSanitizer).
#
#   tools/sanitize.sh [extra pytest arguments, e.g. -x or -k conv]
#
# When: before every release, and after any change to src/*.c, src/*.h or
# python/cnnkit/_kernels.pyx.  About 3-4 minutes on two cores (a minute of
# it the build), so it fits a nightly CI job rather than every push.
#
# What it does (nothing in the source tree or in your environment changes;
# everything goes to $WORK):
#   1. a throwaway virtualenv ($WORK/venv) that sees the packages of the
#      interpreter $PYTHON (numpy, Cython, pytest, hypothesis; torch when
#      present) through a path entry, without running that environment's
#      .pth hooks -- so an editable install of cnnkit there cannot shadow the
#      instrumented build;
#   2. cmake -S . -B $WORK/build with
#        CMAKE_C_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer
#                       -g -O1"
#      and the same -fsanitize flags for the linker (the project adds -O3 to
#      the target, which then wins; the sanitizers work at any level), then
#      the extension and the Python sources are installed into $WORK/stage,
#      which is first on PYTHONPATH;
#   3. two canaries (an out-of-bounds read and a signed overflow in a tiny
#      instrumented library) must be reported, proving the setup works;
#   4. pytest on the op families' tests (tests/test_conv2d.py,
#      test_pool2d.py, test_activation.py, test_dense.py, test_loss.py,
#      test_batchnorm.py), test_seed.py, test_layer_contract.py,
#      test_threads.py, test_reliability.py, test_transforms.py and
#      test_plan.py with
#      libasan preloaded, PYTHONMALLOC=malloc,
#        ASAN_OPTIONS=detect_leaks=0 (CPython leaks by design at exit),
#        allocator_may_return_null=1 (huge allocations become MemoryError,
#        as without ASan), halt_on_error=1, ...
#        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1;
#      CNNKIT_SANITIZER=1 tells the tests that address-space limits
#      (RLIMIT_AS) cannot be used (ASan reserves terabytes of shadow
#      memory): they cap single allocations with ASan's
#      max_allocation_size_mb instead, and skip the RSS-based memory tests
#      (ASan's quarantine keeps freed memory resident);
#   5. a differential leak check: one script (training steps plus calls of
#      every kernel, and an error path) runs under LeakSanitizer for N and
#      10*N iterations; what leaks must not grow with N (CPython's and
#      NumPy's one-off leaks at exit stay constant, a leak per call would
#      not), and leak reports whose stack passes through cnnkit's extension
#      are printed.
#
# Exit status 0 only when the tests pass and no sanitizer reported anything.
# Sanitizer reports (ERROR: AddressSanitizer, runtime error:, LeakSanitizer)
# are extracted from the logs and printed separately from test failures.
#
# Environment:
#   PYTHON  interpreter whose packages are used (default: python3)
#   WORK    scratch directory              (default: /tmp/cnnkit-sanitize)
#   JOBS    parallel compile jobs          (default: 2)
#   CC      C compiler, gcc or clang       (default: cc)
#   CNNKIT_FUZZ_EXAMPLES  examples per fuzz property (default: the tests')
set -uo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
PYTHON="${PYTHON:-python3}"
WORK="${WORK:-/tmp/cnnkit-sanitize}"
JOBS="${JOBS:-2}"
CC="${CC:-cc}"
build="$WORK/build"
stage="$WORK/stage"
venv="$WORK/venv"
logs="$WORK/logs"
mkdir -p "$WORK" "$logs"
t_start=$(date +%s)

say() { printf '\n== %s\n' "$*"; }
die() { printf 'sanitize.sh: %s\n' "$*" >&2; exit 1; }

# -- 0. tools --------------------------------------------------------------
command -v cmake >/dev/null || die "cmake not found"
command -v "$CC" >/dev/null || die "C compiler '$CC' not found"
libasan="$("$CC" -print-file-name=libasan.so)"
[ -e "$libasan" ] || die "no libasan.so for $CC (install gcc's libasan)"
libasan="$(readlink -f "$libasan")"
"$PYTHON" -c 'import numpy, Cython, pytest, hypothesis' \
    || die "$PYTHON lacks numpy, Cython, pytest or hypothesis"

# -- 1. the throwaway environment ------------------------------------------
say "environment: $venv (packages of $PYTHON)"
base="$("$PYTHON" -c 'import sys; print(sys.base_prefix)')"
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ ! -x "$venv/bin/python" ]; then
    "$base/bin/python$pyver" -m venv --without-pip "$venv" \
        || die "cannot create $venv"
fi
site_of() {   # $1: interpreter -> its purelib and platlib directories
    "$1" -c 'import sysconfig; p = sysconfig.get_paths()
print("\n".join(dict.fromkeys([p["purelib"], p["platlib"]])))'
}
vsite="$(site_of "$venv/bin/python" | head -1)"
site_of "$PYTHON" > "$vsite/dev-packages.pth"
"$venv/bin/python" -c 'import numpy, Cython, pytest, hypothesis' \
    || die "the throwaway venv cannot see numpy, Cython, pytest, hypothesis"

# -- 2. instrumented build -------------------------------------------------
san="-fsanitize=address,undefined -fno-omit-frame-pointer"
say "configure + build: $build"
t0=$(date +%s)
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# reuse a previous build only if it is an instrumented build of this tree
if [ -f "$build/CMakeCache.txt" ] &&
        { ! grep -q "fsanitize=address" "$build/CMakeCache.txt" ||
          ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$root" \
              "$build/CMakeCache.txt"; }; then
    rm -rf "$build"
fi
if ! cmake -S "$root" -B "$build" "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_C_COMPILER="$CC" \
        -DCMAKE_C_FLAGS="$san -g -O1" \
        -DCMAKE_MODULE_LINKER_FLAGS="$san" \
        -DCMAKE_SHARED_LINKER_FLAGS="$san" \
        -DPython_EXECUTABLE="$venv/bin/python" \
        > "$logs/configure.log" 2>&1; then
    tail -30 "$logs/configure.log"
    die "cmake configure failed"
fi
if ! cmake --build "$build" -j "$JOBS" > "$logs/build.log" 2>&1; then
    tail -40 "$logs/build.log"
    die "build failed"
fi
rm -rf "$stage"
mkdir -p "$stage"
cp -r "$root/python/cnnkit" "$stage/cnnkit"
find "$stage" \( -name '__pycache__' -o -name '*.so' -o -name '*.c' \) \
    -prune -exec rm -rf {} +
cmake --install "$build" --prefix "$stage" > "$logs/install.log" 2>&1 \
    || die "install into $stage failed"
t_build=$(( $(date +%s) - t0 ))
[ "$(nm -D "$stage"/cnnkit/_kernels*.so | grep -c __asan_)" -gt 0 ] \
    || die "the staged extension is not instrumented"

asan_options=(
    detect_leaks=0                  # CPython leaks by design at exit
    allocator_may_return_null=1     # huge allocations -> MemoryError
    halt_on_error=1 abort_on_error=1
    detect_stack_use_after_return=1 check_initialization_order=1
    strict_string_checks=1
    alloc_dealloc_mismatch=0        # third-party C++ (torch) mixes them
    detect_odr_violation=0          # and defines symbols twice
)
export LD_PRELOAD="$libasan"
export ASAN_OPTIONS="$(IFS=:; echo "${asan_options[*]}" | sed 's/ /:/g')"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$stage"
export PYTHONMALLOC=malloc
export PYTHONDONTWRITEBYTECODE=1
export CNNKIT_SANITIZER=1
where="$("$venv/bin/python" -c 'import cnnkit._kernels as k
print(k.__file__)')" || die "the instrumented cnnkit does not import"
case "$where" in
    "$stage"/*) ;;
    *) die "tests would import $where, not the instrumented build" ;;
esac
echo "instrumented extension: $where (built in ${t_build}s)"

# -- 3. canaries: a clean result must mean something -----------------------
cat > "$WORK/canary.c" <<'CANARY'
#include <stdlib.h>
int canary_oob(int i)
{
    int *a = malloc(4 * sizeof(int));
    int v = a[i];
    free(a);
    return v;
}
int canary_overflow(int i) { return i + 2147483647; }
CANARY
"$CC" -shared -fPIC $san -g -O0 "$WORK/canary.c" -o "$WORK/canary.so" \
    || die "cannot build the sanitizer canary"
for spec in "canary_oob:4:heap-buffer-overflow" \
            "canary_overflow:1:signed integer overflow"; do
    IFS=: read -r name arg pattern <<<"$spec"
    out="$("$venv/bin/python" -c "import ctypes
ctypes.CDLL('$WORK/canary.so').$name($arg)" 2>&1)"
    echo "$out" | grep -q "$pattern" \
        || die "canary $name was not reported; the setup is broken:
$out"
done
echo "sanitizer canaries reported as expected"

# -- 4. tests under ASan + UBSan --------------------------------------------
say "tests under ASan + UBSan"
t0=$(date +%s)
"$venv/bin/python" -m pytest -p no:cacheprovider -q \
    tests/test_conv2d.py tests/test_pool2d.py tests/test_activation.py \
    tests/test_dense.py tests/test_loss.py tests/test_batchnorm.py \
    tests/test_seed.py \
    tests/test_layer_contract.py tests/test_threads.py \
    tests/test_reliability.py tests/test_transforms.py \
    tests/test_plan.py "$@" \
    2>&1 | tee "$logs/pytest.log"
pytest_status=${PIPESTATUS[0]}
t_tests=$(( $(date +%s) - t0 ))

# -- 5. differential leak check --------------------------------------------
say "leak check (LeakSanitizer, differential)"
t0=$(date +%s)
cat > "$WORK/leakcheck.py" <<'LEAKCHECK'
import sys
import numpy as np
import cnnkit
from cnnkit import functional as F, layers as L

n = int(sys.argv[1])
rng = np.random.default_rng(0)
model = cnnkit.Sequential([L.Conv2D(4, 3, padding=1), L.ReLU(),
                           L.MaxPool2D(2), L.AvgPool2D(2), L.Flatten(),
                           L.Dropout(0.2), L.Dense(3)],
                          input_shape=(1, 8, 8), seed=0)
x = rng.standard_normal((8 * n, 1, 8, 8)).astype(np.float32)
y = rng.integers(0, 3, 8 * n)
model.fit(x, y, epochs=1, batch_size=8, verbose=0)          # n steps
model.predict(x[:16])
xi = rng.standard_normal((2, 3, 6, 6))
w = rng.standard_normal((4, 3, 3, 3))
g = rng.standard_normal((2, 4, 6, 6))
z = rng.standard_normal((5, 4))
gz = np.ones((5, 5))
for _ in range(n):
    F.conv2d(xi, w, padding=1)
    F.conv2d_backward(g, xi, w, padding=1)
    F.relu(xi)
    F.relu_backward(xi, xi)
    F.leaky_relu(xi, 0.1)
    F.leaky_relu_backward(xi, xi, 0.1)
    F.sigmoid(xi)
    F.sigmoid_backward(xi, xi)
    F.tanh(xi)
    F.tanh_backward(xi, xi)
    F.silu(xi)
    F.silu_backward(xi, xi)
    F.gelu(xi, "tanh")
    F.gelu_backward(xi, xi)
    out, idx = F.max_pool2d(xi, 2)
    F.max_pool2d_backward(out, idx, xi.shape)
    F.avg_pool2d(xi, 2)
    F.avg_pool2d_backward(out, xi.shape, 2)
    F.global_avg_pool2d(xi)
    F.max_pool2d(xi, 2, ceil_mode=True)
    F.avg_pool2d(xi, 3, 2, 1, ceil_mode=True)
    gm, gi = F.global_max_pool2d(xi)
    F.global_max_pool2d_backward(gm, gi, xi.shape)
    F.dense(z, z)
    F.dense_backward(gz, z, z)
    F.softmax(z)
    F.softmax_backward(z, z)
    F.log_softmax(z)
    F.log_softmax_backward(z, z)
    F.softmax_cross_entropy(z, [0, 1, 2, 3, 0])
    F.softmax_cross_entropy(z, [0, 1, 2, 3, 0], label_smoothing=0.1)
    try:
        F.conv2d(xi, w[:, :2])
    except ValueError:
        pass
print("done", n)
LEAKCHECK
leaked() {   # $1: iterations -> "bytes allocations" (log: leak-$1.log)
    ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1" \
    LSAN_OPTIONS="report_objects=0:max_leaks=0:fast_unwind_on_malloc=0" \
        "$venv/bin/python" "$WORK/leakcheck.py" "$1" \
        > "$logs/leak-$1.log" 2>&1
    grep -E 'SUMMARY: AddressSanitizer: [0-9]+ byte' "$logs/leak-$1.log" \
        | tail -1 \
        | sed -E 's/.*: ([0-9]+) byte\(s\) leaked in ([0-9]+) alloc.*/\1 \2/' \
        | grep . || echo "0 0"
}
small=50
large=500
read -r bytes_small allocs_small <<<"$(leaked $small)"
read -r bytes_large allocs_large <<<"$(leaked $large)"
t_leak=$(( $(date +%s) - t0 ))
echo "leaked after $small iterations: $bytes_small bytes" \
     "in $allocs_small allocations"
echo "leaked after $large iterations: $bytes_large bytes" \
     "in $allocs_large allocations"
leak_status=0
for n in $small $large; do
    if ! grep -q "^done $n" "$logs/leak-$n.log"; then
        tail -30 "$logs/leak-$n.log"
        echo "the leak check script failed ($n iterations)"
        leak_status=1
    fi
done
if [ $(( bytes_large - bytes_small )) -gt 65536 ] ||
        [ $(( allocs_large - allocs_small )) -gt 200 ]; then
    echo "LEAK: what leaks grows with the number of steps and calls"
    leak_status=1
fi
cnnkit_leaks="$(awk -v RS= '/(Direct|Indirect) leak/ && /_kernels/' \
    "$logs/leak-$large.log")"
if [ -n "$cnnkit_leaks" ]; then
    echo "leak reports whose stack passes through cnnkit's extension:"
    echo "$cnnkit_leaks" | head -60
fi

# -- summary ---------------------------------------------------------------
say "sanitizer reports in the test run"
pattern="ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer"
pattern="$pattern|SUMMARY: (Address|UndefinedBehavior)Sanitizer"
reports="$(grep -n -E "$pattern" "$logs/pytest.log" | grep -v "leaked in")"
if [ -n "$reports" ]; then
    echo "$reports" | head -40
    echo "(full traces in $logs/pytest.log)"
    san_status=1
else
    echo "none"
    san_status=0
fi
say "summary"
echo "build ${t_build}s, tests ${t_tests}s (pytest exit status" \
     "$pytest_status), leak check ${t_leak}s," \
     "total $(( $(date +%s) - t_start ))s; logs in $logs"
if [ $san_status -eq 0 ] && [ $leak_status -eq 0 ] &&
        [ "$pytest_status" -eq 0 ]; then
    echo "CLEAN"
    exit 0
fi
[ $san_status -ne 0 ] && echo "SANITIZER ERRORS reported"
[ $leak_status -ne 0 ] && echo "LEAKS reported"
[ "$pytest_status" -ne 0 ] && echo "TEST FAILURES (see $logs/pytest.log)"
exit 1
