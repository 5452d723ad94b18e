# Sourced by the bench scripts: bench_env prints the date, the machine, OpenBLAS's kernel (core) and configuration,
# OPENBLAS_CORETYPE and the load average, the header of every benchmark table of docs/PERFORMANCE.md.
bench_env() {
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(lscpu | sed -n "s/^CPU(s): *//p") cores, $(lscpu | sed -n 's/^L2 cache: *//p') L2"
  echo "openblas: $(/usr/bin/python3 - <<'PYEOF' 2>/dev/null || echo unknown
import ctypes
lib = ctypes.CDLL("libopenblas.so.0")
lib.openblas_get_corename.restype = ctypes.c_char_p
lib.openblas_get_config.restype = ctypes.c_char_p
print(lib.openblas_get_corename().decode(), "|", lib.openblas_get_config().decode())
PYEOF
)"
  echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE:-unset}"
  echo "load before: $(uptime | sed 's/.*load average: //')"
}
