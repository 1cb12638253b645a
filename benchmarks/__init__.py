"""Speed and quality reproductions. Each script writes benchmarks/results/<name>.json (DESIGN.md section 7)
and its table in BENCHMARKS.md; `zoo bench NAME` runs the installed copy."""
