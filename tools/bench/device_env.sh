# Sourced by the device scripts (pairs.sh, rehearsal.sh): unpacks the carried binaries of $BIN, finds the
# libcublas.so.13 that PyTorch's wheel ships (our cuda feature loads it at run time), installs the
# carried wheels (diffusers, peft) for the PyTorch twin, prints the GPU.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
BIN=${BIN:-device-bin/i15}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
for f in "$BIN"/*.xz; do [ -f "$f" ] && xz -df "$f" && chmod +x "${f%.xz}"; done
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal} PYTHONUNBUFFERED=1
cublas=$(python3 - <<'PY'
import glob, site
hits = sorted(p for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/**/libcublas.so.13*", recursive=True))
print(hits[0] if hits else "")
PY
)
[ -n "$cublas" ] && export LD_LIBRARY_PATH="$(dirname "$cublas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ls "$BIN"/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$BIN"/wheels/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; date -u
