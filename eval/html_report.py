"""report.html of an `rrg-eval` run: one self-contained page (inline SVG, no scripts, no network).

What a reader needs to judge a run beyond its headline numbers: the metrics table; per-label F1
bars with each label's support; per label, how the predicted status compares with the reference's
(positive / uncertain / negative / blank); the length distributions of predictions and references;
and the worst cases, prediction beside reference, with the labels on which they disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from eval.clinical import class_confusion
from prompts.vocabulary import CHEXBERT_LABELS

DISCLAIMER = "Machine-drafted reports, not for clinical use. Scores describe a model, not a patient."
STATUSES = ("positive", "uncertain", "negative", "blank")
WORST_CASES = 12
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
.banner{background:#fff3cd;border:1px solid #e0b400;padding:.6em 1em;margin-bottom:1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f4f4f4}td.text{text-align:left;vertical-align:top;width:45%;white-space:pre-wrap}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid table{font-size:.8em}
.diff{color:#a40000}
"""


def _metric_table(metrics: dict) -> str:
    rows = []
    for mode in ("pos", "pos_unc"):
        for average in ("example", "micro", "macro"):
            for labels in ("all14", "top5"):
                values = [metrics[f"ce/{mode}/{average}/{labels}/{m}"] for m in ("precision", "recall", "f1")]
                cells = "".join(f"<td>{v:.3f}</td>" for v in values)
                rows.append(f"<tr><th>{mode}</th><th>{average}</th><th>{labels}</th>{cells}</tr>")
    ce = "<table><tr><th>mode</th><th>average</th><th>labels</th><th>P</th><th>R</th><th>F1</th></tr>"
    ce += "".join(rows) + "</table>"
    nlg = [(k.removeprefix("nlg/"), v) for k, v in metrics.items() if k.startswith("nlg/")]
    nlg += [(k.removeprefix("nlg/") + " (not computed)", why) for k, why in metrics.get("not_computed", {}).items()]
    nlg_rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{v:.3f}</td></tr>" if isinstance(v, float)
        else f"<tr><th>{escape(name)}</th><td class=text>{escape(str(v))}</td></tr>"
        for name, v in nlg
    )
    return f"<div class=grid><div><h3>Clinical efficacy</h3>{ce}</div><div><h3>NLG</h3><table>{nlg_rows}</table></div></div>"


def _f1_bars(rows: Sequence[dict], labeler: str) -> str:
    """Horizontal bars of per-label F1 (positive mode), with support."""
    chosen = [r for r in rows if r["labeler"] == labeler and r["mode"] == "pos"]
    bar_height, left, width = 18, 190, 360
    parts = [f'<svg width="{left + width + 120}" height="{bar_height * len(chosen) + 20}" role="img">']
    for i, row in enumerate(chosen):
        y = i * bar_height + 5
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="12">{escape(row["label"])}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{width * row["f1"]:.1f}" height="{bar_height - 4}" fill="#3a78b5"/>')
        parts.append(
            f'<text x="{left + width * row["f1"] + 4:.1f}" y="{y + 13}" font-size="11">'
            f'{row["f1"]:.2f} (n={row["support"]})</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _confusion(predicted: Sequence[dict], reference: Sequence[dict]) -> str:
    tables = []
    for label in CHEXBERT_LABELS:
        table = class_confusion(predicted, reference, label)
        peak = max(max(row.values()) for row in table.values()) or 1
        head = "".join(f"<th>{s[:3]}</th>" for s in STATUSES)
        body = ""
        for ref_status in STATUSES:
            cells = ""
            for pred_status in STATUSES:
                count = table[ref_status][pred_status]
                shade = 255 - int(150 * count / peak)
                cells += f'<td style="background:rgb({shade},{shade},255)">{count}</td>'
            body += f"<tr><th>{ref_status[:3]}</th>{cells}</tr>"
        tables.append(
            f"<table><caption>{escape(label)}</caption><tr><th>ref \\ pred</th>{head}</tr>{body}</table>"
        )
    return f"<div class=grid>{''.join(tables)}</div>"


def _length_histogram(records: Sequence[dict]) -> str:
    predicted = [len(r["prediction"].split()) for r in records]
    reference = [len(r["reference"].split()) for r in records]
    top = max(predicted + reference + [1])
    step = max(1, -(-top // 30))  # about 30 bins
    bins = top // step + 1
    counts = {
        name: [sum(1 for v in values if v // step == b) for b in range(bins)]
        for name, values in (("prediction", predicted), ("reference", reference))
    }
    peak = max(max(c) for c in counts.values()) or 1
    height, bar = 160, 9
    parts = [f'<svg width="{bins * (2 * bar + 4) + 60}" height="{height + 40}" role="img">']
    for b in range(bins):
        x = 40 + b * (2 * bar + 4)
        for offset, (name, colour) in enumerate((("prediction", "#3a78b5"), ("reference", "#d9822b"))):
            h = height * counts[name][b] / peak
            parts.append(f'<rect x="{x + offset * bar}" y="{height - h + 10:.1f}" width="{bar}" height="{h:.1f}" fill="{colour}"/>')
        if b % 5 == 0:
            parts.append(f'<text x="{x}" y="{height + 25}" font-size="10">{b * step}</text>')
    parts.append("</svg>")
    mean_p, mean_r = sum(predicted) / len(predicted), sum(reference) / len(reference)
    legend = (
        f'<p><span style="color:#3a78b5">&#9632; predictions</span> (mean {mean_p:.1f} words) '
        f'<span style="color:#d9822b">&#9632; references</span> (mean {mean_r:.1f} words); '
        f"bins of {step} words</p>"
    )
    return "".join(parts) + legend


def _worst_cases(records: Sequence[dict], labeler: str) -> str:
    ranked = sorted(records, key=lambda r: (r["scores"]["example_f1"], r["scores"]["bleu4"], r["id"]))
    rows = []
    for record in ranked[:WORST_CASES]:
        labels = record["labels"][labeler]
        differing = [
            f"{name}: {labels['prediction'].get(name, 'blank')} vs {labels['reference'].get(name, 'blank')}"
            for name in CHEXBERT_LABELS
            if labels["prediction"].get(name) != labels["reference"].get(name)
        ]
        scores = ", ".join(f"{k} {v:.3f}" for k, v in record["scores"].items())
        rows.append(
            f"<tr><th>{escape(record['id'])}<br><small>{escape(scores)}</small></th>"
            f"<td class=text>{escape(record['prediction'])}</td><td class=text>{escape(record['reference'])}</td>"
            f"<td class='text diff'>{escape('; '.join(differing)) or 'none'}</td></tr>"
        )
    return (
        "<table><tr><th>study</th><th>prediction (machine draft)</th><th>reference</th>"
        f"<th>labels that differ (prediction vs reference)</th></tr>{''.join(rows)}</table>"
    )


def write_report(
    path: Path, metrics: dict, per_label: Sequence[dict], records: Sequence[dict],
    main_labels: tuple[Sequence[dict], Sequence[dict]],
) -> None:
    """Write report.html for scored records (with `labels` and `scores`) and their metrics."""
    labeler = metrics["labeler"]
    notice = f"<div class=banner>{escape(metrics['notice'])}</div>" if metrics.get("notice") else ""
    source = escape(", ".join(f"{k}: {v}" for k, v in metrics["source"].items()))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rrg-eval report</title><style>{_STYLE}</style></head>
<body>
<div class=banner><strong>{escape(DISCLAIMER)}</strong></div>{notice}
<h1>rrg-eval report</h1>
<p>{metrics['reports']} reports; labels by the <strong>{escape(labeler)}</strong> labeler; {source}</p>
{_metric_table(metrics)}
<h2>F1 per label (positive mode, {escape(labeler)} labeler)</h2>
{_f1_bars(per_label, labeler)}
<h2>Predicted versus reference status, per label</h2>
<p>Rows: the reference report's status; columns: the draft's. Counts of reports.</p>
{_confusion(*main_labels)}
<h2>Report lengths</h2>
{_length_histogram(records)}
<h2>Worst cases</h2>
<p>The {min(WORST_CASES, len(records))} reports with the lowest example F1 (then BLEU-4).</p>
{_worst_cases(records, labeler)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
