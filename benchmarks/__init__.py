"""Side-by-side runs against the anchors (entry points: ``bench_vs_trl.py``, ``gpu_check.sh``); see README.md."""
