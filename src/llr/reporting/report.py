"""A self-contained HTML report of the figures and tables: PNGs embedded as
base64, CSV and Markdown tables rendered as HTML, one caption per item
(``CAPTIONS``, keyed by file stem). No network, no extra dependencies.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

import pandas as pd

from llr.errors import LLRError
from llr.io import atomic_path

DEVIATION = ("Deviation from the authors' setup: last-layer retraining (LLR, CB-LLR, DFR, AFR) here trains "
             "on cached penultimate embeddings computed once per ERM model in eval mode (no data "
             "augmentation), as DFR and AFR do; the authors ran LLR through the frozen network with "
             "training augmentation. Final-epoch models are reported for ERM and LLR (no model selection); "
             "only AFR tunes its hyperparameters on validation WGA.")

CAPTIONS: dict[str, str] = {
    "fig2": ("Figure 2. Neural collapse: NC1 = tr(Σ_W Σ_B⁺)/K of the training features at every evaluation "
             "point of ERM (fractional epochs; log scale, mean ± std over seeds), the standard epoch count "
             "(dashed) and NC1 of the held-out features at the end of training (star)."),
    "fig3": ("Figure 3. Convergence to the max-margin SVM (LinearSVC, C = 1e5, no intercept): directional error between the LLR head "
             "(SGD, lr 1e-3, 10× the standard epochs) and the SVM direction on the held-out features, per "
             "epoch, mean ± std over seeds; how many seeds' features were separable."),
    "fig4": ("Figure 4. Group balance of the held-out set: LLR test worst-group accuracy (WGA) across "
             "held-out group ratios, one line per ERM training group ratio; the gray line is ERM trained "
             "with the held-out data added (the paper's ERM), triangles ERM on the training pool only, and "
             "DFR; mean ± std over seeds. One panel row per held-out construction (data removed, as the "
             "paper's text; all data kept and ratio reached by sampling, as the authors' plotting script). "
             "Each panel prints the Pearson r of every LLR line against the gray line."),
    "fig4_pearson": ("Figure 4, Pearson r with group ratios fixed: for each dataset, held-out construction and "
                     "ERM ratio, r over the group ratios r between the WGA of ERM trained with the held-out "
                     "data added at r and the WGA of LLR on the held-out set of ratio r (each point a mean over "
                     "seeds; pearson_r_seed_std: std of the per-seed r); pearson_r_train_erm uses ERM on the "
                     "training pool only."),
    "fig5": ("Figure 5. Class balancing: test WGA of ERM trained on 100% of the data (train + held-out) "
             "with each class-balancing mode, and of LLR (no balancing) or class-balanced LLR (CB-LLR) "
             "on the held-out set after the train/held-out split; error bars = std over seeds."),
    "fig6": ("Figure 6. Group balancing dynamics: test WGA at every evaluation point of ERM on 100% of the "
             "data with group subsetting, upsampling and upweighting (no balancing dashed, as reference); "
             "mean ± std over seeds."),
    "fig7": ("Figure 7. DFR vs class-balanced ERM: test WGA of class-balanced ERM on 100% of the data and "
             "of DFR (LLR on the group-balanced held-out set) for each balancing mode, and AFR; error bars = "
             "std over seeds."),
    "table1": ("Table 1. Margins and accuracy, per group as in the paper: Pearson r over seeds × LLR "
               "checkpoints between a group's minimum or average margin on the held-out set and the same LLR "
               "head's test accuracy on that group; the paper's r in parentheses."),
    "table2": ("Table 2. Datasets: group counts per split and shares of the training split "
               "(g = y·|S| + s), with differences from the counts printed in the paper."),
    "paper_comparison": ("Comparison with the paper: one row per claim and dataset, the paper's value where it "
                         "gives one, ours with its spread over seeds, and whether the claim holds (yes / no / "
                         "inconclusive when the seed spread covers both outcomes) by the decision rule stated "
                         "in the row, computed from our numbers."),
}

_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.deviation { background: #fff6e0; border-left: 4px solid #e0a000; padding: .6em 1em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; }
figcaption, .caption { font-size: .92em; color: #333; margin: .4em 0 .8em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.yes { background: #e3f5e1; } td.no { background: #fbe3e3; } td.inconclusive { background: #fff6d6; }
.scroll { overflow-x: auto; }
"""


CAPTION_DIR = Path(__file__).resolve().parents[3] / "workflow" / "report"
# Tables summarising a figure share its caption file.
CAPTION_FILES = {"fig8_correlation": "fig8", "fig8_effective_ratio": "fig8",
                 "ablation_caching_summary": "ablation_caching"}


def caption(stem: str) -> str:
    """The item's caption: workflow/report/<stem>.rst (the captions that
    `snakemake --report` shows too) where it exists, else CAPTIONS."""
    f = CAPTION_DIR / f"{CAPTION_FILES.get(stem, stem)}.rst"
    if f.is_file():
        return " ".join(f.read_text().split())
    return CAPTIONS.get(stem, stem)


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.4g}"
    return str(v)


def csv_html(path: str | os.PathLike) -> str:
    """A CSV file as an HTML table (numbers right-aligned, yes/no cells of a
    ``holds`` column coloured)."""
    df = pd.read_csv(path)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, row):
            cls = "num" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            if c == "holds" and str(v) in ("yes", "no", "inconclusive"):
                cls = str(v)
            cells.append(f'<td class="{cls}">{html.escape(_fmt(v))}</td>' if cls else
                         f"<td>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _inline(text: str) -> str:
    t = html.escape(text.replace("\\|", "|"))
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def markdown_html(text: str) -> str:
    """Minimal Markdown: pipe tables, ``-`` lists, ``#`` headings and
    paragraphs (what this package's .md tables contain)."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [_cells(b) for b in block]
            sep = len(rows) > 1 and all(re.fullmatch(r":?-{2,}:?", c) for c in rows[1] if c)
            head, body = (rows[0], rows[2:]) if sep else (None, rows)
            h = "<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>" if head else ""
            b = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f'<div class="scroll"><table>{h}<tbody>{b}</tbody></table></div>')
            continue
        if re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                items.append(re.sub(r"^\s*[-*] ", "", lines[i]))
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")
            continue
        m = re.match(r"(#{1,6})\s+(.*)", line)
        if m:
            lvl = min(len(m.group(1)) + 2, 6)
            out.append(f"<h{lvl}>{_inline(m.group(2))}</h{lvl}>")
            i += 1
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith("|") \
                and not re.match(r"\s*[-*] ", lines[i]) and not re.match(r"#{1,6}\s", lines[i]):
            para.append(lines[i].strip())
            i += 1
        out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def table1_layout(path: str | os.PathLike) -> str:
    """Table 1 in the paper's layout (llr.reporting.figures.table1_markdown) from a tidy
    table1.csv; empty when the file lacks its columns (an older layout)."""
    from llr.reporting.figures import TABLE1_COLUMNS, table1_markdown

    df = pd.read_csv(path)
    if not set(TABLE1_COLUMNS) <= set(df.columns) or df.empty:
        return ""
    return table1_markdown(df)


def _img(path: str) -> str:
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG"):
        raise LLRError(f"report: {path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def build_report(figures: list[str], tables: list[str], out_html: str | os.PathLike,
                 title: str = "Last-layer retraining: reproduction report") -> str:
    """Write a self-contained HTML page: ``figures`` (PNG paths) embedded as
    base64 images, ``tables`` (.csv or .md) rendered as HTML tables, each with
    its caption from CAPTIONS (by file stem). When a stem comes as both .md
    and .csv, the Markdown is shown and the CSV is folded below it; a lone
    table1.csv is shown in the paper's layout (one small table per dataset)
    with the CSV folded below.
    Returns the HTML."""
    for p in [*figures, *tables]:
        if not Path(p).is_file():
            raise LLRError(f"report: input {p} missing")
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="deviation">{html.escape(DEVIATION, quote=False)}</p>']
    if figures:
        parts.append("<h2>Figures</h2>")
    for p in figures:
        stem = Path(p).stem
        parts.append(f'<figure id="{html.escape(stem)}"><img alt="{html.escape(stem)}" src="{_img(p)}">'
                     f"<figcaption>{html.escape(caption(stem), quote=False)}</figcaption></figure>")
    stems: dict[str, list[str]] = {}
    for p in tables:
        stems.setdefault(Path(p).stem, []).append(p)
    if stems:
        parts.append("<h2>Tables</h2>")
    for stem, paths in stems.items():
        md = [p for p in paths if p.lower().endswith(".md")]
        csv = [p for p in paths if p.lower().endswith(".csv")]
        other = [p for p in paths if p not in md and p not in csv]
        if other:
            raise LLRError(f"report: tables must be .csv or .md, got {other}")
        parts.append(f'<section id="{html.escape(stem)}"><p class="caption"><strong>'
                     f"{html.escape(caption(stem), quote=False)}</strong></p>")
        for p in md:
            parts.append(markdown_html(Path(p).read_text()))
        laid_out = False
        if stem == "table1" and not md and csv:  # the paper's layout, built from the tidy CSV
            layout = table1_layout(csv[0])
            if layout:
                parts.append(markdown_html(layout))
                laid_out = True
        for p in csv:
            if md or laid_out:
                parts.append(f"<details><summary>{html.escape(Path(p).name)}</summary>{csv_html(p)}</details>")
            else:
                parts.append(csv_html(p))
        parts.append("</section>")
    parts.append("</body></html>\n")
    text = "\n".join(parts)
    with atomic_path(out_html) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return text
