"""The benchmark's report (bench.md): the encoding comparison, the training table, the ratios."""

from __future__ import annotations

import json


def report(results: dict) -> str:
    e, net, fit, old = results["encoding"], results["network"], results["end_to_end"], results["legacy_2016"]
    cores = e["cores"]
    ref_all = e[f"reference_{cores}proc_img_s"]
    lines = [
        f"# colorization.bench  {results['date']}  device={results['device']}",
        f"machine: {json.dumps(results['machine'])}",
        f"command: {results['command']}",
        f"files: {results['files']['n']} JPEGs, mean {results['files']['mean_kb']:.0f} KB; bins Q={results['bins']}",
        f"matmul peak: bf16 {results['matmul']['bf16_tflops']:.3f} TFLOP/s"
        + (f", fp32 {results['matmul']['fp32_tflops']:.3f}" if "fp32_tflops" in results["matmul"] else "")
        + f" (FLOP utilization below is against {results['matmul']['utilization_against']})",
        "",
        f"## data encoding alone ({e['images']} crops of {e['crop']}x{e['crop']}: Lab, soft targets, weights, mask)",
        f"device-side batched ({e['torch_threads']} threads): {e['device_img_s']:10.1f} img/s",
        f"per-image 2016 reference, {cores} processes: {ref_all:10.1f} img/s"
        f"   -> device-side is {e['device_img_s'] / ref_all:.1f}x faster on the same {cores} cores",
        f"reference nearest neighbours: {e['reference_nn_search']}",
    ]
    if "device_1thread_img_s" in e:
        lines.append(
            f"one core each: device-side {e['device_1thread_img_s']:.1f} img/s vs reference "
            f"{e['reference_1proc_img_s']:.1f} img/s -> {e['device_1thread_img_s'] / e['reference_1proc_img_s']:.1f}x"
        )
    lines += [
        f"agreement: max |L - L_ref| = {e['check_max_abs_L']:.2e}, max |Z - Z_ref| = {e['check_max_abs_z']:.2e}",
        "",
        "## training (images/s; util = model FLOP/s over the matmul peak; schedule = wall time for 18 M images)",
        "| configuration | batch | precision | img/s | data wait | TFLOP/s | util | peak GB | schedule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("network step alone", net), ("end-to-end (this config)", fit), ("2016-style end-to-end", old)):
        wait = f"{r['data_wait_fraction']:.0%}" if "data_wait_fraction" in r else "-"
        mem = f"{r['peak_memory_gb']:.1f}" if "peak_memory_gb" in r else "-"
        lines.append(
            f"| {name} | {r['batch_size']} | {r['precision']} | {r['img_s']:.1f} | {wait} | {r['tflops']:.3f} | "
            f"{r['flop_utilization']:.1%} | {mem} | {r['schedule_hours']:.1f} h |"
        )
    lines += [
        "",
        f"end-to-end vs 2016-style: {fit['img_s'] / old['img_s']:.1f}x; end-to-end vs network alone: "
        f"{fit['img_s'] / net['img_s']:.0%}; host-side data hooks: {fit['host_data_hooks_fraction']:.0%} of the time",
    ]
    if "memory_table" in results:
        lines += ["", "## peak GPU memory of the network step (GB)", "| batch | precision | peak GB |", "|---|---|---|"]
        for row in results["memory_table"]:
            peak = "OOM" if row["peak_gb"] is None else f"{row['peak_gb']:.1f}"
            lines.append(f"| {row['batch_size']} | {row['precision']} | {peak} |")
    lines.append(f"\n(peak host RSS {results['peak_host_rss_gb']:.1f} GB; bench took {results['bench_seconds']:.0f} s)")
    return "\n".join(lines)


