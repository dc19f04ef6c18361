#!/usr/bin/env bash
# Run the numerical tests the way other machines would compute them: torch's CPU kernels forced to
# `default` (no SIMD) and `avx2`, with 1 and 2 threads each. A test whose tolerance is tighter than the
# precision it compares passes in one of these and fails in another. Usage: bash scripts/numeric_portability.sh
set -uo pipefail
cd "$(dirname "$0")/.."
files=(tests/test_lissa.py tests/test_deep_solvers.py tests/test_preconditioner.py tests/test_parameter_scope.py
       tests/test_exact_influence.py tests/test_triage.py tests/test_featurizers.py tests/test_rank_cli.py
       tests/test_text_embeddings.py tests/test_feature_comparison.py)
status=0
for capability in default avx2; do
    for threads in 1 2; do
        echo "=== ATEN_CPU_CAPABILITY=$capability, $threads thread(s)"
        ATEN_CPU_CAPABILITY=$capability OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
            OPENBLAS_NUM_THREADS=$threads .venv/bin/python -m pytest "${files[@]}" -q -p no:cacheprovider \
            | tail -n 3 || status=1
    done
done
exit $status
