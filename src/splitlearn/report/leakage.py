"""The leakage report: one self-contained HTML page a privacy officer can read.

It never trains: it turns measured results into figures (PNG, embedded) and tables, with one
sentence per figure saying what it shows. Every figure is an ``<img data-figure=NAME>`` and every
table a ``<table data-table=NAME>``, so tests (and people) can check that nothing is missing.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RunEvidence", "verdicts", "write_report"]


@dataclass
class RunEvidence:
    """What was measured for one trained model (e.g. vanilla, or NoPeek with some a1)."""

    name: str
    epochs: list[dict[str, float]]  # per epoch: "test_accuracy", "dcor" (held-out leakage)
    metrics: dict[str, float] = field(default_factory=dict)  # attack metrics: "ssim", "mse", "direction AUC", ...
    originals: torch.Tensor | None = None  # a few private inputs (n, c, h, w)
    reconstructions: torch.Tensor | None = None  # the attacker's reconstructions of them
    config: Mapping[str, Any] | None = None  # this run's own configuration (RunConfig.to_dict())
    classes: int | None = None  # number of classes, for the chance level of label attacks


def verdicts(run: RunEvidence) -> list[str]:
    """One plain sentence per attack result of ``run``, with the chance level it is read against."""
    m, out = run.metrics, []
    ssim = m.get("reconstruction SSIM", m.get("ssim"))
    if ssim is not None:
        if ssim >= 0.5:
            out.append(f"Inputs are still recognisable from the smashed data: reconstruction SSIM {ssim:.2f}.")
        elif ssim >= 0.2:
            out.append(f"Inputs are partly recognisable from the smashed data: reconstruction SSIM {ssim:.2f}.")
        else:
            out.append(f"Reconstructions bear little likeness to the inputs: SSIM {ssim:.2f}.")
    inverted = m.get("inversion SSIM")
    if inverted is not None:
        likeness = "still recognisable" if inverted >= 0.5 else "partly recognisable" if inverted >= 0.2 else "not recognisable"
        out.append(f"Without any auxiliary data, inverting the smashed data leaves inputs {likeness}: inversion SSIM {inverted:.2f}.")
    completed = m.get("completion accuracy")
    if completed is not None:
        chance = 1 / run.classes if run.classes else None
        majority = m.get("completion majority share")
        against = f" against {chance:.0%} chance" if chance else ""
        against += f" and {majority:.0%} for always guessing the largest class" if majority is not None else ""
        leaks = chance is None or completed > max(chance, majority or 0) + 0.1
        out.append(f"{'Labels leak' if leaks else 'No label leakage beyond chance'} by model completion: from a handful of "
                   f"known labels the attacker infers {completed:.0%} of the others{against}.")
    accuracy = m.get("label attack accuracy")
    if accuracy is not None:
        chance = 1 / run.classes if run.classes else None
        against = f" against {chance:.0%} chance ({run.classes} classes)" if chance else ""
        leaks = chance is None or accuracy > chance + 0.1
        out.append(f"{'Labels leak' if leaks else 'No label leakage beyond chance'}: the attacker infers "
                   f"{accuracy:.0%} of training labels from the cut gradients{against}.")
    aucs = {k: v for k, v in m.items() if k.endswith("AUC") and "label" in k}
    if aucs:
        best_key = max(aucs, key=aucs.get)
        best = aucs[best_key]
        out.append(f"{'Labels leak' if best >= 0.7 else 'Little label leakage'}: {best_key} {best:.2f} against 0.50 chance "
                   "(1.00 means every label is read from the gradients).")
    return out


_ATTACK_OF = {"reconstruction": "reconstruction", "ssim": "reconstruction", "inversion": "inversion", "label direction": "label_direction",
              "label norm": "label_norm", "label attack accuracy": "label_clustering", "completion": "model_completion"}
"""The registered attack behind each kind of result key."""


def _threat_models(keys: set[str]) -> list[tuple[str, str]]:
    """(attack, its threat model from the attack registry) for each attack whose results are shown."""
    from splitlearn.privacy.attacks import ATTACKS

    names = dict.fromkeys(name for prefix, name in _ATTACK_OF.items() for k in sorted(keys) if k.startswith(prefix))
    return [(name, ATTACKS[name].threat_model) for name in names]


def _explanations(runs: Sequence[RunEvidence]) -> list[str]:
    """Why results that look contradictory are not, for the runs at hand."""
    labels = any(k.startswith("label") for r in runs for k in r.metrics)
    kinds = {(r.config or {}).get("split", {}).get("configuration") for r in runs}
    nopeek = any((r.config or {}).get("privacy", {}).get("nopeek_a1") for r in runs)
    out = ["SSIM (structural similarity) compares a reconstruction with the private input it came from: 1 is the "
           "same image, about 0 is no likeness. DCOR(X, Z) is the distance correlation between the raw inputs and the "
           "smashed data: 1 when Z determines X up to rotation and scale, 0 when they are independent."]
    if labels and "ushaped" in kinds:
        out.append("In a U-shaped split the labels themselves never leave the client, but the gradient it sends back "
                   "at the cut depends on them: the label attacks read the labels from that gradient.")
    if labels and nopeek:
        out.append("NoPeek lowers the dependence of the smashed data on the raw input X, not on the label Y: it keeps Z "
                   "predictive of Y by design, so it does not protect labels and can make them easier to infer.")
    return out


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _new_figure(**kw) -> Figure:
    from matplotlib.figure import Figure  # here: matplotlib takes 0.3 s to import

    return Figure(**kw)


def _curve(runs: Sequence[RunEvidence], key: str, ylabel: str) -> str:
    fig = _new_figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for run in runs:
        xs = [e["epoch"] for e in run.epochs if key in e]
        ax.plot(xs, [e[key] for e in run.epochs if key in e], marker="o", label=run.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)  # from 0: small differences are not drawn large
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _grid(runs: Sequence[RunEvidence]) -> str:
    shown = [r for r in runs if r.originals is not None]
    n = min(len(r.originals) for r in shown)
    rows = [("private input", shown[0].originals)] + [(f"{r.name}: reconstructed", r.reconstructions) for r in shown]
    fig = _new_figure(figsize=(1.1 * n, 1.2 * len(rows)))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j in range(n):
            img = images[j].detach().cpu().float()
            img = img.permute(1, 2, 0).clamp(0, 1) if img.dim() == 3 else img
            gray = img.dim() == 2 or img.shape[-1] == 1
            axes[i][j].imshow(img.squeeze().numpy(), cmap="gray" if gray else None, vmin=0, vmax=1)
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return _png(fig)


def _tradeoff(sweep: Sequence[Mapping[str, float]]) -> str:
    keys = [k for k in ("dcor", "ssim") if all(k in p for p in sweep)]
    fig = _new_figure(figsize=(4.5 * len(keys), 3.2))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot([p[key] for p in sweep], [p["test_accuracy"] for p in sweep], marker="o")
        for p in sweep:
            ax.annotate(f"a1={p['a1']:g}", (p[key], p["test_accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel({"dcor": "leakage DCOR(X, Z)", "ssim": "reconstruction SSIM"}[key])
        ax.set_ylabel("test accuracy")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    return _png(fig)


def _table(name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table data-table="{name}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(name: str, png: str, sentence: str) -> str:
    return (
        f'<figure><img data-figure="{name}" alt="{html.escape(name)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(sentence)}</figcaption></figure>"
    )


def write_report(
    path: str | Path,
    *,
    runs: Sequence[RunEvidence],
    config: Mapping[str, Any],
    title: str = "Leakage report",
    sweep: Sequence[Mapping[str, float]] = (),
    notes: Sequence[str] = (),
    tables: Sequence[tuple[str, str, Sequence[str], Sequence[Sequence[Any]]]] = (),
) -> Path:
    """Write the report to ``path`` and return it. ``sweep`` holds one point per a1 value with
    ``a1``, ``test_accuracy``, ``dcor`` and optionally ``ssim``. ``tables`` adds sections of
    (name, sentence saying what the table shows, header, rows)."""
    if not runs:
        raise ValueError("a report needs at least one run")
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Utility and leakage during training</h2>")
    parts.append(_figure("accuracy", _curve(runs, "test_accuracy", "test accuracy"),
                         "Test accuracy after each epoch: what each model is worth; NoPeek should stay close to vanilla."))
    if any("dcor" in e for r in runs for e in r.epochs):
        parts.append(_figure("dcor", _curve(runs, "dcor", "DCOR(X, Z)"),
                             "Distance correlation between raw inputs and the smashed data sent to the server, on held-out "
                             "data at a fixed batch size: 1 means Z mirrors X, 0 means no dependence; lower is less leakage."))
    if any(r.originals is not None for r in runs):
        parts.append("<h2>What a curious server can reconstruct</h2>")
        parts.append(_figure("reconstructions", _grid(runs),
                             "Top row: private inputs that never left the client. Below: the server's reconstructions from "
                             "the smashed data it received; the less they resemble the top row, the better the protection."))
    if sweep:
        parts.append("<h2>Privacy-utility trade-off</h2>")
        parts.append(_figure("tradeoff", _tradeoff(sweep),
                             "Each point is one NoPeek weight a1: moving left is less leakage, moving down is lost accuracy; "
                             "a good setting sits left while staying high."))
        parts.append(_table("sweep", ["a1", *(k for k in sweep[0] if k != "a1")],
                            [[p["a1"], *(v for k, v in p.items() if k != "a1")] for p in sweep]))
    parts.append("<h2>Attack results</h2>")
    keys = sorted({k for r in runs for k in r.metrics})
    final = lambda r, k: r.epochs[-1].get(k, float("nan")) if r.epochs else float("nan")  # noqa: E731
    parts.append(_table("attacks", ["run", "test accuracy", "DCOR(X, Z)", *keys],
                        [[r.name, final(r, "test_accuracy"), final(r, "dcor"), *(r.metrics.get(k, float("nan")) for k in keys)] for r in runs]))
    said = [(r.name, v) for r in runs for v in verdicts(r)]
    if said:
        parts.append("<h3>In plain words</h3><ul data-verdicts>" + "".join(
            f"<li>{html.escape(name if len(runs) > 1 else '')}{': ' if len(runs) > 1 else ''}{html.escape(v)}</li>"
            for name, v in said) + "</ul>")
    parts += [f"<p>{html.escape(e)}</p>" for e in _explanations(runs)]
    threats = _threat_models({k for r in runs for k in r.metrics})
    if threats:
        parts.append("<h3>Who attacks, what they see, what they hold</h3><ul data-threat-models>" + "".join(
            f"<li><b>{html.escape(name)}</b>: {html.escape(text)}</li>" for name, text in threats) + "</ul>")
    for name, sentence, header, rows in tables:
        parts.append(f"<p>{html.escape(sentence)}</p>")
        parts.append(_table(name, header, rows))
    parts.append("<h2>Configuration</h2>")
    parts.append(_config_table(runs, config))
    return _write_page(path, title, parts)


def _matrix_figure(rows: Sequence[Mapping[str, Any]], key: str, chance: float, floor: float | None = None) -> str:
    """Test accuracy against one attack's score: a point per run, a colour per defence, the
    undefended run as a star, chance as a dashed line (and, for the input attacks, what knowing
    only the class scores as a dotted one); both axes from 0."""
    fig = _new_figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    for name in dict.fromkeys(r["defence"] for r in rows):
        mine = [r for r in rows if r["defence"] == name]
        ax.plot([r[key] for r in mine], [r["test_accuracy"] for r in mine], marker="*" if name == "none" else "o",
                markersize=12 if name == "none" else 6, linestyle="-" if len(mine) > 1 else "",
                label="undefended" if name == "none" else name)
        for r in mine:
            if name != "none":
                ax.annotate(f"{r['strength']:g}", (r[key], r["test_accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if chance == chance:  # not NaN
        ax.axvline(chance, linestyle="--", color="grey", label=f"chance {chance:.2f}")
    if floor is not None:
        ax.axvline(floor, linestyle=":", color="black", label=f"by class {floor:.2f}")
    ax.set_xlim(min(0.0, min(r[key] for r in rows)), 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"attack success: {key}")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _score(value: float | None) -> str:
    return "none yet (no fake batch)" if value is None else f"{value:.2f}"


def _points(drop: float) -> str:
    return f"{100 * drop:.1f} points" if drop >= 0 else f"nothing (it gained {100 * -drop:.1f} points)"


def _threat_paragraph(attack: str) -> str:
    """The registered attack's threat model, as a paragraph (nothing for an unregistered name)."""
    from splitlearn.privacy.attacks import ATTACKS

    entry = ATTACKS.get(attack)
    return "" if entry is None else f"<p data-threat-model><b>Threat model.</b> {html.escape(entry.threat_model)}</p>"


def _hijacking_figure(h: Mapping[str, Any], chance: float, floor: float | None) -> str:
    """Reconstruction SSIM of the hijacking server over the unaware client's steps, chance and the
    by-class level as lines, and the step at which the check stopped the client; y from 0."""
    fig = _new_figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    ax.plot([s for s, _ in h["history"]], [v for _, v in h["history"]], marker="o", label="client unaware")
    stop = h["checked"]["stopped_at"]
    if stop is not None:
        ax.axvline(stop, color="tab:red", label=f"check stops the client (step {stop})")
        ax.plot([stop], [h["checked"]["ssim"]], marker="X", color="tab:red", markersize=9, linestyle="none")
    if chance == chance:
        ax.axhline(chance, linestyle="--", color="grey", label=f"chance {chance:.2f}")
    if floor is not None:
        ax.axhline(floor, linestyle=":", color="black", label=f"by class {floor:.2f}")
    ax.set_xlim(0, h["steps"] * 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("client training steps")
    ax.set_ylabel("reconstruction SSIM")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _hijacking_section(h: Mapping[str, Any], chance: float, floor: float | None) -> list[str]:
    checked, honest = h["checked"], h["honest"]
    parts = ["<h2>hijacking (a malicious server; infers inputs)</h2>", _threat_paragraph("hijacking"),
             _figure("matrix-hijacking", _hijacking_figure(h, chance, floor),
                     "Reconstruction SSIM of a server that hijacks training (FSHA), over the steps of a client that does "
                     "not look, and where the client's fake-batch check stopped it; the dashed line is chance.")]
    stop = checked["stopped_at"]
    said = [f"A malicious server that steers the client's training reconstructs the client's held-out inputs at SSIM "
            f"{h['ssim']:.2f} after {h['steps']} steps, from {h['public']} public images and no label (chance {chance:.2f}).",
            (f"The client's fake-batch check stopped training at step {stop}, after {checked['fakes']} fake batches, when the "
             f"reconstruction scored {checked['ssim']:.2f}." if stop is not None else
             f"The client's fake-batch check did not stop it (score {_score(checked['score'])})."),
            (f"Against an honest server the check raised no alarm in {h['steps']} steps (lowest score "
             f"{_score(honest['lowest_score'])}, alarm below {h['threshold']:g})." if honest["stopped_at"] is None else
             f"Against an honest server the check raised a false alarm at step {honest['stopped_at']}."),
            f"Its fake batches cost {_points(honest['accuracy_without_check'] - honest['accuracy'])} of test accuracy "
            f"there ({honest['accuracy']:.4f} with the check, {honest['accuracy_without_check']:.4f} without).",
            "The check catches the attack as published; a server that mixes the task's gradient into its own can pass it, "
            "so it is evidence against this attack, not a guarantee against every variant."]
    pictures = h.get("pictures")
    if pictures:
        originals = torch.tensor(pictures["originals"])
        shown = [RunEvidence(name, [], originals=originals, reconstructions=torch.tensor(pictures[key]))
                 for name, key in (("client unaware", "unaware"), ("client running the check", "checked"))]
        parts.append(_figure("matrix-hijacking-pictures", _grid(shown),
                             "Top row: private inputs the server never saw. Below: what the hijacking server decoded from the "
                             "smashed data of an unaware client after all its steps, and of a client whose check stopped it."))
    parts.append("<ul data-hijacking>" + "".join(f"<li>{html.escape(t)}</li>" for t in said) + "</ul>")
    dash = "-"
    parts.append(_table("hijacking", ["client", "server", "steps trained", "stopped", "check score", "reconstruction SSIM"], [
        ["unaware", "hijacking", h["steps"], dash, dash, h["ssim"]],
        ["fake-batch check", "hijacking", stop if stop is not None else h["steps"], "yes" if stop is not None else "no",
         _score(checked["score"]), checked["ssim"]],
        ["fake-batch check", "honest", h["steps"] if honest["stopped_at"] is None else honest["stopped_at"],
         "no" if honest["stopped_at"] is None else "yes", _score(honest["score"]), dash],
    ]))
    return parts


def write_matrix_report(path: str | Path, matrix: Mapping[str, Any], *, defences: Mapping[str, str]) -> Path:
    """The privacy matrix of ``splitlearn experiment privacy`` as one page: per attack, test
    accuracy against attack success for every defence and strength, with chance and the
    undefended point; then every number, and a sentence per defence on what it bought and cost."""
    rows, chance = matrix["rows"], matrix["chance"]
    undefended = next(r for r in rows if r["defence"] == "none")
    parts = ["<h1>Privacy matrix: every defence against every attack</h1>",
             f"<p>{html.escape(str(matrix['dataset']))}, U-shaped small CNN, {matrix['epochs']} epochs; the attacker is the "
             "server, from what it receives. Up and to the left is better: accuracy kept, attack held near chance.</p>"]
    floors = matrix.get("class_floor", {})
    for name, about in matrix["attacks"].items():
        key = about["score"]
        floor = floors.get(key)
        parts.append(f"<h2>{html.escape(name)} (infers {html.escape(about['target'])})</h2>")
        parts.append(_threat_paragraph(name))
        parts.append(_figure(f"matrix-{name}", _matrix_figure(rows, key, chance[key], floor),
                             f"Test accuracy against {key} for each run; the star is the undefended run, the dashed line what "
                             f"an attacker without any information scores ({chance[key]:.2f})"
                             + (f", the dotted line what one scores who learns only each sample's class and draws the mean "
                                f"image of that class ({floor:.2f})." if floor is not None else ".")))
        if floor is not None:
            parts.append(f"<p data-floor>A defence that keeps accuracy keeps each sample's class readable from what the "
                         f"server receives; an attacker who reads it can draw the mean image of the class, which scores "
                         f"{floor:.2f} here against {undefended[key]:.2f} undefended. So no defence that keeps accuracy "
                         f"can be expected to hold {html.escape(key)} far below the by-class line.</p>")
    if "hijacking" in matrix:
        key = "reconstruction SSIM"
        parts += _hijacking_section(matrix["hijacking"], chance.get(key, float("nan")), floors.get(key))
    keys = [about["score"] for about in matrix["attacks"].values()]
    extra = [k for k in ("dcor", "dp_epsilon") if any(r.get(k) is not None for r in rows)]
    parts.append("<h2>All runs</h2>")
    parts.append(_table("matrix", ["defence", "strength", "test accuracy", *keys, *extra],
                        [[r["defence"], r["strength"], r["test_accuracy"], *(r[k] for k in keys),
                          *(r.get(k) if r.get(k) is not None else "-" for k in extra)] for r in rows]))
    parts.append("<h2>In plain words</h2><ul data-verdicts>")
    for r in rows:
        if r["defence"] == "none":
            continue
        moved = ", ".join(f"{k} {undefended[k]:.2f} to {r[k]:.2f}" for k in keys)
        cost = 100 * (undefended["test_accuracy"] - r["test_accuracy"])
        parts.append(f"<li>{html.escape(r['defence'])} at {r['strength']:g}: {html.escape(moved)}; accuracy "
                     f"{'cost' if cost >= 0 else 'gain'} {abs(cost):.1f} points.</li>")
    parts.append("</ul><h2>Defences</h2><ul>" + "".join(
        f"<li><b>{html.escape(n)}</b>: {html.escape(m)}</li>" for n, m in defences.items()) + "</ul>")
    return _write_page(path, "Privacy matrix", parts)


_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:.2em .6em}figcaption{font-size:.9em;color:#333}")


def _write_page(path: str | Path, title: str, parts: Sequence[str]) -> Path:
    """One self-contained HTML page of ``parts``, written atomically (write, then rename)."""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f"</head><body>{''.join(parts)}</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path


def _config_table(runs: Sequence[RunEvidence], shared: Mapping[str, Any]) -> str:
    """Each run's own settings (a run without one shows ``shared``): one value column when they
    agree, one column per run when they differ, so no run is shown with another's settings."""
    flat = [_flatten(r.config if r.config is not None else shared) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    if len(runs) == 1 or all(f == flat[0] for f in flat):
        return _table("config", ["setting", "value"], [[k, json.dumps(flat[0].get(k))] for k in keys])
    rows = [[k, *(json.dumps(f.get(k)) for f in flat)] for k in keys]
    rows.sort(key=lambda row: len(set(row[1:])) == 1)  # the settings that differ first
    return _table("config", ["setting", *(r.name for r in runs)], rows)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out
