"""Run every benchmark (benchmarks/bench_*.py) in one process and print their ratios.

Each benchmark measures its fast path and a reference in the same run, so the ratios compare like with
like on whatever machine this runs on; absolute times are printed only for orientation.
"""
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    results = {}
    for path in sorted(HERE.glob("bench_*.py")):
        if len(sys.argv) > 1 and path.stem not in sys.argv[1:] and path.stem[6:] not in sys.argv[1:]:
            continue
        print(f"== {path.stem}", flush=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        results[path.stem] = mod.main()
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
