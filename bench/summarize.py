"""Print the figures of ``bench/results/*.json`` as the Markdown tables of bench/README.md.

    python bench/summarize.py [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(d: Path, name: str) -> dict | None:
    p = d / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def fastest(x: dict, clock: str) -> float:
    """Ratio of the fastest calls (older result files lack ``ratio_of_mins``)."""
    if "ratio_of_mins" in x:
        return x["ratio_of_mins"]
    num, den = list(x[f"{clock}_s"].values())
    return num["min"] / den["min"]


def conditions(r: dict) -> str:
    m0, m1 = r["machine_start"], r["machine_end"]
    rounds = r.get("repeats", r.get("settings", {}).get("repeats"))
    env = m0.get("env", {})
    env_s = (", env " + " ".join(f"{k}={v}" for k, v in env.items())) if env else ""
    return (f"_{r['started']}, {m0['cpu']}, {m0['cpu_count']} cores, torch threads "
            f"{m0['torch_threads']}, load average (1 min) {m0['loadavg_1_5_15'][0]} -> "
            f"{m1['loadavg_1_5_15'][0]}{env_s}, clock: {r.get('clock', 'wall')}, "
            f"{rounds} rounds; `{r['command']}`_")


def pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def overhead(r: dict) -> None:
    print(conditions(r))
    print()
    print("| model | batch | attack | attack (s) | overhead vs clean passes (median of "
          "rounds) | ratio of medians | ratio of fastest | wall-clock median | overhead vs "
          "passes at the iterates |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for x in r["rows"]:
        it = x.get("vs_iterates")
        it_s = f"{it['median_ratio']:.3f}" if it else "n/a"
        atk_s = x[f"{r['clock']}_s"]["attack"]["median"]
        print(f"| {x['model']} | {x['batch']} | {x['attack']} | {atk_s:.4f} | "
              f"{x['median_ratio']:.3f} | {x['ratio_of_medians']:.3f} | "
              f"{fastest(x, r['clock']):.3f} | {x['wall_ratio']['median_ratio']:.3f} | "
              f"{it_s} |")
    print()


def vs_ta(r: dict) -> None:
    print(conditions(r))
    print()
    print("| model | attack | advlab variant | advlab / torchattacks (median of rounds) | "
          "ratio of medians | ratio of fastest | wall-clock median | advlab s (median) | "
          "torchattacks s | page faults per call (advlab / torchattacks) | "
          "success advlab / torchattacks | max abs diff of x_adv |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in r["rows"]:
        secs = list(x[f"{r['clock']}_s"].values())
        faults = x.get("minor_faults_per_call")
        f_s = " / ".join(f"{v:.0f}" for v in faults.values()) if faults else "n/a"
        print(f"| {x['model']} | {x['attack']} | {x['variant']} | {x['median_ratio']:.3f} | "
              f"{x['ratio_of_medians']:.3f} | {fastest(x, r['clock']):.3f} | "
              f"{x['wall_ratio']['median_ratio']:.3f} | {secs[0]['median']:.4f} | "
              f"{secs[1]['median']:.4f} | {f_s} | {pct(x['success_advlab'])} / "
              f"{pct(x['success_torchattacks'])} | {x['max_abs_diff_vs_torchattacks']:.2g} |")
    print()


def levers(r: dict) -> None:
    print(conditions(r) + f" -- {r['model']}, {r['n']} MNIST test images, eps {r['eps']}, "
          f"{r['steps']} steps")
    print()
    print("| variant | sign flips, clean | sign flips, MI-FGSM path (significant coords) | "
          "FGSM success | PGD success | MI-FGSM success | max change (points) | "
          "MI-FGSM time vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for x in r["rows"]:
        ch = [abs(x.get(f"success_change_points_{a}", 0.0)) for a in ("fgsm", "pgd", "mifgsm")]
        print(f"| {x['variant']} | {100 * x['sign_flip_clean']:.2f}% | "
              f"{100 * x['sign_flip_path']:.2f}% ({100 * x['sign_flip_path_significant']:.2f}%)"
              f" | {100 * x['success_fgsm']:.2f}% | {100 * x['success_pgd']:.2f}% | "
              f"{100 * x['success_mifgsm']:.2f}% | {max(ch):.2f} | {x['time_vs_fp32']:.3f} |")
    print()
    if "forward_modes" in r:
        fm = r["forward_modes"]
        print(f"Clean forward over the {r['n']} images (batch {r['batch']}):\n")
        print("| autograd mode | seconds (median) | time vs grad recorded |")
        print("|---|---:|---:|")
        for k, v in fm.items():
            print(f"| {k} | {v['s']['median']:.3f} | {v['vs_grad']:.3f} |")
        print()
    if "clean_logit_reuse" in r:
        c = r["clean_logit_reuse"]
        print(f"Clean-logit reuse, {', '.join(c['attacks'])} on {c['n']} images: three "
              f"`evaluate_attack` calls {c['s']['separate']['median']:.2f} s, one "
              f"`transfer_matrix` {c['s']['shared']['median']:.2f} s (ratio "
              f"{c['shared_over_separate']:.3f}, same numbers: {c['same_numbers']})\n")
    if "data_loading" in r:
        d = r["data_loading"]
        e = d["epoch_batches_64"]
        print(f"Data loading, MNIST train ({d['train_images']} images): first load "
              f"{d['first_load']['wall_s']:.2f} s wall, cached load "
              f"{d['cached_load']['wall_s']:.2f} s; one shuffled epoch in batches of 64: "
              f"tensor indexing {e['index']['images_per_s']:.0f} img/s, DataLoader "
              f"{e['dataloader']['images_per_s']:.0f} img/s "
              f"(DataLoader / indexing time {d['dataloader_over_index']:.2f})\n")


def train(r: dict) -> None:
    print(conditions(r))
    print()
    print("| model | hand loop img/s (wall) | fit loop img/s (wall) | fit loop / hand "
          "(paired) | fit whole call img/s (wall / cpu) |")
    print("|---|---:|---:|---:|---:|")
    for x in r["rows"]:
        print(f"| {x['model']} | {x['hand_images_per_s']['wall']:.0f} | "
              f"{x['fit_loop_images_per_s']['wall']:.0f} | "
              f"{x['fit_loop_over_hand_wall_paired']:.3f} | "
              f"{x['fit_call_images_per_s']['wall']:.0f} / "
              f"{x['fit_call_images_per_s']['cpu']:.0f} |")
    print()


def pipeline(r: dict) -> None:
    print(conditions(r))
    print()
    c, w = r["cpu"], r["wall"]
    print(f"sources {r['sources']}, attacks {r['attacks']}, evaluated models {r['targets']}, "
          f"{r['n']} images, batch {r['batch']} ({r['entries']} entries)")
    print()
    print("| clock | table (s) | sum of necessary passes (s) | table / necessary |")
    print("|---|---:|---:|---:|")
    print(f"| cpu | {c['table_s']['median']:.2f} | {c['necessary_sum_s']['median']:.2f} | "
          f"{c['table_over_necessary']:.3f} |")
    print(f"| wall | {w['table_s']['median']:.2f} | {w['necessary_sum_s']['median']:.2f} | "
          f"{w['table_over_necessary']:.3f} |")
    if "naive_table_s" in r:
        print(f"\nnaive table (evaluate_attack per entry): {r['naive_table_s']['cpu']:.2f} s cpu "
              f"= {r['naive_over_table']:.2f}x the table; same numbers: "
              f"{r['naive_equals_table']}")
    print()


def memory(r: dict) -> None:
    print(conditions(r) + f" -- {r['model']}, batch {r['batch']}, MI-FGSM {r['steps']} steps")
    print()
    print("| configuration | peak RSS (MiB) | / single model | attack working set (MiB) | "
          "/ single model |")
    print("|---|---:|---:|---:|---:|")
    for x in r["rows"]:
        print(f"| {x['config']} | {x['peak_rss_mib']:.0f} | {x['peak_over_single']:.2f} | "
              f"{x['attack_working_mib']:.0f} | {x['working_over_single']:.2f} |")
    if r.get("low_memory_time"):
        print()
        print("| members | low_memory / plain attack time (median of rounds) |")
        print("|---:|---:|")
        for x in r["low_memory_time"]:
            print(f"| {x['members']} | {x['median_ratio']:.2f} |")
    if r.get("gradient_check"):
        print()
        print("| members | low_memory vs plain gradient: max abs diff | max abs gradient | "
              "adversarial pixels differing |")
        print("|---:|---:|---:|---:|")
        for x in r["gradient_check"]:
            print(f"| {x['members']} | {x['max_abs_diff']:.2g} | {x['max_abs_grad']:.2g} | "
                  f"{pct(x['adv_pixels_differing'])} |")
    print()


def fixed(r: dict) -> None:
    print(conditions(r) + f" -- {r['model']}, batch {r['batch']}; fastest block")
    print()
    print("| piece | ms per call |")
    print("|---|---:|")
    for name, x in r["rows"].items():
        print(f"| {name} | {x['ms_per_call']:.3f} |")
    print(f"\nadvlab's per-call costs: {r['advlab_per_call_ms']:.2f} ms = "
          f"{100 * r['advlab_per_call_over_one_pass']:.2f}% of one forward+backward pass\n")


def zoo(r: dict) -> None:
    st = r["settings"]
    # zoo_speed times blocks of batches with a wall clock, whatever ``clock`` says
    print(conditions(r).replace(f"clock: {r.get('clock', 'wall')}", "clock: wall")
          + f" -- {st['batches']} batches per timed block")
    print()
    print("| model | params | train img/s | inference img/s | epoch (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, x in r["models"].items():
        print(f"| {name} | {x['params']} | {x['train_img_per_s']:.0f} | "
              f"{x['infer_img_per_s']:.0f} | {x['epoch_s']:.0f} |")
    print(f"\nfull protocol ({st['epochs']} epochs of every model): "
          f"{r['full_protocol_hours']:.1f} h\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    d = args.results
    for name, fn in [("attack_overhead_cnn256_long", overhead), ("attack_overhead", overhead),
                     ("vs_torchattacks_cnn_long", vs_ta),
                     ("vs_torchattacks_mifgsm_repeat", vs_ta), ("vs_torchattacks", vs_ta),
                     ("vs_torchattacks_levers", vs_ta), ("vs_torchattacks_malloc", vs_ta),
                     ("fixed_costs", fixed),
                     ("speed_levers", levers), ("train_throughput", train),
                     ("pipeline", pipeline), ("ensemble_memory", memory),
                     ("ensemble_memory_default_alloc", memory),
                     ("ensemble_memory_b1024", memory), ("zoo_speed", zoo)]:
        r = load(d, name)
        if r is not None:
            print(f"### {name}\n")
            fn(r)


if __name__ == "__main__":
    main()
