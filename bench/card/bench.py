"""Benchmark `cairn card generate` and compare it with huggingface_hub in one run.

Run through bench/card/run.sh, which builds the release binary and the Python venv.

Measures, on this machine:
  1. a 100 MB evaluation CSV -> Hugging Face README: wall time and peak RSS of the process;
  2. a small card end to end (process start included): median over N runs;
  3. the same small card rendered by huggingface_hub.ModelCard.from_template with the Hub's
     default template: end to end (a python process per card) and in-process (import done);
and prints a Markdown table with the ratios.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

CAIRN = os.environ["CAIRN_BIN"]
RUNS = int(os.environ.get("BENCH_RUNS", "30"))
CSV_MB = int(os.environ.get("BENCH_CSV_MB", "100"))
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "card")


def run_measured(argv, **kw):
    """Runs a command; returns (seconds, peak RSS in MiB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}): {err}")
    return elapsed, usage.ru_maxrss / 1024.0


def make_csv(path, target_mb):
    """Long-layout CSV: 20 metrics x 5 datasets x 2 splits x 50 slices, repeated rows."""
    metrics = ["accuracy", "f1", "precision", "recall", "roc_auc"] + [f"metric_{i}" for i in range(15)]
    target = target_mb * 1024 * 1024
    with open(path, "w") as f:
        f.write("metric,value,dataset,split,slice\n")
        i = 0
        written = 0
        while written < target:
            rows = []
            for _ in range(10000):
                m = metrics[i % 20]
                value = ((i * 7919) % 1000) / 1000.0
                rows.append(f"{m},{value:.4f},dataset_{(i // 20) % 5},{'test' if (i // 100) % 2 else 'validation'},slice_{(i // 200) % 50}\n")
                i += 1
            chunk = "".join(rows)
            f.write(chunk)
            written += len(chunk)
    return os.path.getsize(path), i


HF_CARD_SCRIPT = r"""
import sys, time
t0 = time.perf_counter()
from huggingface_hub import ModelCard, ModelCardData, EvalResult
data = ModelCardData(
    model_name="sentiment-classifier", license="apache-2.0", language=["en"],
    library_name="transformers", pipeline_tag="text-classification", base_model="bert-base-uncased",
    datasets=["stanfordnlp/imdb"], metrics=["accuracy", "f1"],
    eval_results=[
        EvalResult(task_type="text-classification", dataset_type="stanfordnlp/imdb", dataset_name="imdb",
                   metric_type=name, metric_value=value)
        for name, value in [("accuracy", 0.923), ("precision", 0.918), ("recall", 0.928), ("f1", 0.921), ("roc_auc", 0.965)]
    ],
)
def render():
    return str(ModelCard.from_template(data, model_id="sentiment-classifier",
        model_summary="A binary sentiment classifier for English reviews.", developers="ML Team"))
out = render()
open(sys.argv[1], "w").write(out)
if len(sys.argv) > 2:
    n = int(sys.argv[2])
    times = []
    for _ in range(n):
        t = time.perf_counter(); render(); times.append(time.perf_counter() - t)
    times.sort()
    print(times[len(times) // 2])
"""


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = os.path.join(tmp, "results.csv")
        size, nrows = make_csv(csv_path, CSV_MB)
        out = os.path.join(tmp, "README.md")
        big = [run_measured([CAIRN, "card", "generate", csv_path, "--max-input-size", "1GB", "--model-name", "big", "-o", out]) for _ in range(3)]
        big_time = statistics.median(t for t, _ in big)
        big_rss = max(r for _, r in big)
        rows.append((f"generate from a {size / 1e6:.0f} MB CSV ({nrows:,} rows), cairn", f"{big_time * 1000:.0f} ms", f"{big_rss:.1f} MiB"))

        small = [os.path.join(EXAMPLES, "eval.json"), "--source", os.path.join(EXAMPLES, "minimal.yaml")]
        cairn_small = [run_measured([CAIRN, "card", "generate", *small, "-o", out]) for _ in range(RUNS)]
        cairn_small_t = statistics.median(t for t, _ in cairn_small)
        cairn_small_rss = max(r for _, r in cairn_small)
        rows.append(("small card end to end (process start included), cairn", f"{cairn_small_t * 1000:.1f} ms", f"{cairn_small_rss:.1f} MiB"))

        script = os.path.join(tmp, "hf_card.py")
        with open(script, "w") as f:
            f.write(HF_CARD_SCRIPT)
        hf_runs = max(5, RUNS // 3)
        hf_small = [run_measured([sys.executable, script, os.path.join(tmp, "hf.md")]) for _ in range(hf_runs)]
        hf_small_t = statistics.median(t for t, _ in hf_small)
        hf_small_rss = max(r for _, r in hf_small)
        rows.append(("small card end to end, huggingface_hub ModelCard.from_template", f"{hf_small_t * 1000:.1f} ms", f"{hf_small_rss:.1f} MiB"))

        in_proc = subprocess.run([sys.executable, script, os.path.join(tmp, "hf.md"), "200"], capture_output=True, text=True, check=True)
        hf_in = float(in_proc.stdout.strip())
        rows.append(("small card in-process render (import done), huggingface_hub", f"{hf_in * 1000:.2f} ms", "—"))

    print("| measurement | time (median) | peak RSS |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print()
    print(f"- end-to-end ratio, huggingface_hub / cairn: **{hf_small_t / cairn_small_t:.1f}×**")
    print(f"- cairn end to end vs huggingface_hub in-process render alone: **{hf_in / cairn_small_t:.2f}×**")
    print(f"- targets: 100 MB CSV < 2 s and < 100 MB RSS: {'met' if big_time < 2 and big_rss < 100 else 'NOT met'}; "
          f"small card < 10 ms: {'met' if cairn_small_t < 0.010 else 'NOT met'}")


if __name__ == "__main__":
    main()
