"""The report's figures (matplotlib, PNG bytes): one function per figure, each returning None when the run has
nothing to show for it (a GRPO run has no pairs, a run without ground truth no correctness)."""

from __future__ import annotations

import io
from collections.abc import Callable

from selfalign.report.data import RunData

Figure = tuple[str, str, str, bytes]  # (file stem, title, caption, PNG)
CHANCE_STYLE = {"color": "0.6", "linestyle": ":", "linewidth": 1}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8})
    return plt


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def axes_row(n: int, width: float = 4.3, height: float = 3.2):
    plt = _pyplot()
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _series(run: RunData, key: str) -> tuple[list[int], list[float]]:
    ts = [t for t in run.round_numbers if run.metrics[t].get(key) is not None]
    return ts, [run.metrics[t][key] for t in ts]


def _round_axis(ax, rounds: list[int]) -> None:
    ax.set_xlabel("round")
    ax.set_xticks(rounds, labels=[str(t) for t in rounds])


#: eval.json keys that are counts or uncertainties, not something to plot per round
_EVAL_NOT_PLOTTED = ("_se", "/prompts", "/records", "/samples", "/unscored")


def eval_panels(run: RunData) -> list[tuple[str, list[str], bool]]:
    """(title, eval keys, rates on 0..1) per panel: the top-level eval metrics (verifier accuracy, ...), then per
    evaluator (`eval/<name>/...`) one panel of its rates and one of its other numbers (lengths, ...); stderrs and
    counts left out."""
    keys = sorted({k for m in run.metrics.values() for k in m if k.startswith("eval/")}
                  - {"eval/prompts", "eval/mean_response_tokens"})
    keys = [k for k in keys if not k.endswith(_EVAL_NOT_PLOTTED) and "_stderr" not in k]
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split("/")[1] if k.count("/") >= 2 else "", []).append(k)
    panels = []
    for name, ks in groups.items():
        rates = [k for k in ks if all(0 <= v <= 1 for v in _series(run, k)[1])]
        others = [k for k in ks if k not in rates]
        if rates:
            panels.append((name or "held-out evaluation", rates, True))
        if others:
            panels.append((f"{name} (other)" if name else "held-out evaluation (other)", others, False))
    return panels[:12]


def eval_figure(run: RunData) -> Figure | None:
    panels = eval_panels(run)
    if not panels:
        return None
    plt = _pyplot()
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.2 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax, (title, ks, rates) in zip(axes, panels, strict=False):
        group = title.split(" ")[0] if title != "held-out evaluation" else ""
        for k in ks:
            ts, vs = _series(run, k)
            label = k.split("/", 2)[2] if group and k.count("/") >= 2 else k.split("/", 1)[1]
            ax.plot(ts, vs, marker="o", label=label)
        ax.set_title(title)
        _round_axis(ax, run.round_numbers)
        if rates:
            ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return ("eval", "Evaluation per round",
            "Held-out metrics of each round's model (round 0: the starting model), one panel per evaluator.",
            to_png(fig))


def rewards_figure(run: RunData) -> Figure | None:
    sources = [s for s, by_t in run.scores.items() if any(by_t.values())]
    if not sources:
        return None
    sources = sources[:6]
    fig, axes = axes_row(len(sources), width=3.8)
    for ax, source in zip(axes, sources, strict=True):
        by_t = run.scores[source]
        ts = sorted(t for t in by_t if by_t[t])
        ax.boxplot([by_t[t] for t in ts], positions=ts, widths=0.5, showmeans=True, showfliers=False)
        ax.set_title(source)
        _round_axis(ax, ts)
    caption = ("Distribution of each reward's scores over the round's samples (box: quartiles, whiskers: 1.5 IQR, "
               "triangle: mean)" + ("; GRPO rounds: the rollouts' reward terms." if run.online else "."))
    return "rewards", "Reward distributions per source and round", caption, to_png(fig)


def reward_quality_figure(run: RunData) -> Figure | None:
    accuracy = sorted({k for m in run.metrics.values() for k in m
                       if k.startswith("reward/") and k.endswith("_pairwise_accuracy")})
    other = [k for k in ("pairs/consistency", "reward/judge_parse_failure_rate")
             if any(k in m for m in run.metrics.values())]
    if not accuracy and not other:
        return None
    fig, axes = axes_row(int(bool(accuracy)) + int(bool(other)))
    panels = ([("pairwise accuracy (right vs wrong sample)", accuracy)] if accuracy else []) + (
        [("consistency / judge parse failures", other)] if other else [])
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for k in keys:
            ts, vs = _series(run, k)
            name = k.split("/", 1)[1].removesuffix("_pairwise_accuracy")
            ax.plot(ts, vs, marker="o", label=name)
        if keys is accuracy:
            ax.axhline(0.5, **CHANCE_STYLE, label="chance")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.legend()
        _round_axis(ax, [t for t in run.round_numbers if t > 0])
    caption = ("How often each reward scores a right sample above a wrong one of the same prompt (ties half; needs "
               "ground truth), and CREAM's ranking consistency with the previous model.")
    return "reward_quality", "Consistency and judge quality per round", caption, to_png(fig)


def length_figure(run: RunData) -> Figure | None:
    have_eval = any(run.eval_tokens.values())
    have_samples = any(run.sample_tokens.values())
    chars = [k for k in ("pairs/chosen_chars", "pairs/rejected_chars") if any(k in m for m in run.metrics.values())]
    n = int(have_eval) + int(have_samples) + int(bool(chars))
    if n == 0:
        return None
    fig, axes = axes_row(n, width=4.2)
    it = iter(axes)
    if have_eval:
        ax = next(it)
        modes = sorted({m for by_mode in run.eval_tokens.values() for m in by_mode})
        for i, mode in enumerate(modes):
            ts = [t for t in sorted(run.eval_tokens) if run.eval_tokens[t].get(mode)]
            offset = (i - (len(modes) - 1) / 2) * 0.3
            bp = ax.boxplot([run.eval_tokens[t][mode] for t in ts], positions=[t + offset for t in ts], widths=0.25,
                            showfliers=False, patch_artist=True)
            for patch in bp["boxes"]:
                patch.set_facecolor(f"C{i}")
                patch.set_alpha(0.5)
            ax.plot([], [], color=f"C{i}", linewidth=6, alpha=0.5, label=mode)
        ax.set_title("eval responses (tokens)")
        ax.legend()
        _round_axis(ax, sorted(run.eval_tokens))
    if have_samples:
        ax = next(it)
        ts = sorted(t for t in run.sample_tokens if run.sample_tokens[t])
        ax.boxplot([run.sample_tokens[t] for t in ts], positions=ts, widths=0.5, showmeans=True, showfliers=False)
        ax.set_title("training samples (tokens)" if not run.online else "samples / rollouts (tokens)")
        _round_axis(ax, ts)
    if chars:
        ax = next(it)
        for k in chars:
            ts, vs = _series(run, k)
            ax.plot(ts, vs, marker="o", label=k.split("/", 1)[1].removesuffix("_chars"))
        ax.set_title("pairs: mean length (characters)")
        ax.legend()
        _round_axis(ax, [t for t in run.round_numbers if t > 0])
    return ("length", "Response length",
            "Eval responses per round and mode, the responses sampled for training, and the chosen vs rejected length "
            "of the pairs (a growing gap is length bias).", to_png(fig))


def pairs_figure(run: RunData) -> Figure | None:
    kept = _series(run, "pairs/kept")
    correct = [k for k in ("pairs/chosen_correct", "pairs/rejected_correct", "reward/sample_accuracy",
                           "train/rollout_accuracy") if any(k in m for m in run.metrics.values())]
    if not kept[0] and not correct:
        return None
    fig, axes = axes_row(int(bool(kept[0])) + int(bool(correct)))
    it = iter(axes)
    if kept[0]:
        ax = next(it)
        ax.bar(kept[0], kept[1], width=0.6, label="kept")
        ts, dropped = _series(run, "pairs/dropped_ties")
        if ts:
            ax.bar(ts, dropped, width=0.6, bottom=[run.metrics[t]["pairs/kept"] for t in ts], label="dropped (ties)")
            top = max(run.metrics[t]["pairs/kept"] + run.metrics[t].get("pairs/dropped_ties", 0) for t in kept[0])
            ax.set_ylim(0, top * 1.3)  # room for the legend above the bars
            ax.legend(loc="upper left", ncol=2)
        ax.set_title("pairs per round")
        _round_axis(ax, kept[0])
    if correct:
        ax = next(it)
        names = {"pairs/chosen_correct": "chosen right", "pairs/rejected_correct": "rejected right",
                 "reward/sample_accuracy": "all samples right", "train/rollout_accuracy": "rollouts right"}
        for k in correct:
            ts, vs = _series(run, k)
            ax.plot(ts, vs, marker="o", label=names[k], linestyle="--" if k.startswith(("reward", "train")) else "-")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("correctness (ground truth)")
        ax.legend()
        _round_axis(ax, [t for t in run.round_numbers if t > 0])
    caption = ("Preference pairs per round; with ground truth, the share of pairs whose chosen / rejected response is "
               "right (a good reward makes the first high and the second low) next to the share of all samples."
               if kept[0] else "The share of the round's GRPO rollouts whose answer is right (ground truth, measured "
               "only).")
    return "pairs", "Pairs kept and their correctness" if kept[0] else "Correctness", caption, to_png(fig)


def training_figure(run: RunData) -> Figure | None:
    curves = {k: v for k, v in run.steps.items() if any("loss" in s for s in v)}
    if not curves:
        ts, losses = _series(run, "train/loss")
        if not ts:
            return None
        fig, (ax,) = axes_row(1)
        ax.plot(ts, losses, marker="o")
        ax.set_title("mean training loss per round")
        _round_axis(ax, ts)
        return "training", "Training", "The round's mean training loss (no per-step log in this run).", to_png(fig)
    extra = next((k for k in ("rewards/margins", "rewards/accuracies", "reward", "kl")
                  if any(k in s for v in curves.values() for s in v)), None)
    from matplotlib.ticker import MaxNLocator

    fig, axes = axes_row(1 + int(extra is not None), width=5.2)
    for panel, key in zip(axes, ["loss", extra], strict=False):
        for i, ((t, trainer), steps) in enumerate(sorted(curves.items(), key=lambda kv: kv[1][0]["global_step"])):
            points = [(s["global_step"], s[key]) for s in steps if key in s]
            if points:
                label = f"round {t}" + ("" if trainer == "trainer" else f" ({trainer})")
                panel.plot(*zip(*points, strict=True), color=f"C{i % 10}", label=label, linewidth=1.2)
        panel.set_title(key + " per step")
        panel.set_xlabel("training step (counted across the run)")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend()
    return ("training", "Training per step",
            "TRL's logged values at every optimizer step of every trainer of the run, one colour per round.",
            to_png(fig))


def cost_figure(run: RunData) -> Figure | None:
    stages = list(dict.fromkeys(k.split("/", 1)[1] for m in run.metrics.values() for k in m
                                if k.startswith("time/") and k != "time/round"))
    if not stages:
        return None
    fig, (ax_time, ax_mem) = axes_row(2, width=5.0)
    rounds = run.round_numbers
    bottom = [0.0] * len(rounds)
    for i, stage in enumerate(stages):
        values = [run.metrics[t].get(f"time/{stage}", 0.0) for t in rounds]
        ax_time.bar(rounds, values, bottom=bottom, width=0.6, label=stage, color=f"C{i}")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax_time.set_title("stage time (s)")
    ax_time.legend()
    _round_axis(ax_time, rounds)
    for i, stage in enumerate(stages):
        ts, vs = _series(run, f"memory/{stage}_peak_rss_mb")
        if ts:
            ax_mem.plot(ts, [v / 1024 for v in vs], marker="o", color=f"C{i}", label=f"{stage} (RSS)")
    for i, stage in enumerate(stages):
        ts = [t for t in rounds if stage in run.peak_gpu_mb.get(t, {})]
        if ts:
            ax_mem.plot(ts, [run.peak_gpu_mb[t][stage] / 1024 for t in ts], marker="s", linestyle="--",
                        color=f"C{i}", label=f"{stage} (GPU)")
    ax_mem.set_title("peak memory (GB, the largest process)")
    ax_mem.legend()
    _round_axis(ax_mem, rounds)
    return ("cost", "Stage times and peak memory",
            "Seconds per stage, and each stage's peak memory: resident (RSS, since the process started) and, on "
            "GPUs, allocated.", to_png(fig))


FIGURES: list[Callable[[RunData], Figure | None]] = [
    eval_figure, rewards_figure, reward_quality_figure, pairs_figure, length_figure, training_figure, cost_figure,
]


def run_figures(run: RunData) -> list[Figure]:
    return [f for f in (make(run) for make in FIGURES) if f is not None]
