"""The drift report as one self-contained HTML page: inline CSS and SVG, no script, no network.

Per feature, worst first, the training and current distributions are drawn side by side as
grouped bars (shares of rows per bin, missing values in the last bin), under the feature's
statistics and the reasons it drifted. The page opens offline, in any browser, and prints.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone

from .report import DriftReport, FeatureDrift

TRAINING_COLOR = "#4c78a8"
CURRENT_COLOR = "#f58518"
WIDTH, HEIGHT = 760, 270
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 12, 26, 92

__all__ = ["render_html", "render_svg"]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:980px;color:#1f2328;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:0}
.meta{color:#57606a;font-size:13px;margin-bottom:14px}
.verdict{display:inline-block;padding:6px 12px;border-radius:6px;font-weight:600;margin:8px 0 16px}
.bad{background:#ffebe9;color:#a40e26;border:1px solid #ffc1c0}
.good{background:#dafbe1;color:#116329;border:1px solid #aceebb}
table{border-collapse:collapse;font-size:13px;width:100%;margin-bottom:22px}
th,td{padding:4px 8px;border-bottom:1px solid #d0d7de;text-align:right;white-space:nowrap}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2),th:nth-child(3),td:nth-child(3)
{text-align:left}
tr.drift td{background:#fff5f5} td.status-drift{color:#a40e26;font-weight:600}
section{border:1px solid #d0d7de;border-radius:8px;padding:14px 16px;margin:0 0 18px}
.badge{font-size:12px;padding:2px 8px;border-radius:10px;margin-left:8px;vertical-align:middle}
.stats{font-size:13px;color:#424a53;margin:6px 0 4px} .reasons{color:#a40e26;font-size:13px}
svg text{font-family:inherit} a{color:#0969da;text-decoration:none}
"""


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def _status(feature: FeatureDrift) -> str:
    if feature.drifted:
        return "drift"
    return "ok" if feature.enough_rows else "too few rows"


def render_svg(feature: FeatureDrift, *, width: int = WIDTH, height: int = HEIGHT) -> str:
    """Grouped bars of the training and current shares per bin, as an SVG element."""
    bins = feature.bins or ["(none)"]
    training = feature.training or [0.0]
    current = feature.current or [0.0]
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    top = max([*training, *current, 0.01])
    top = _nice(top)
    slot = plot_w / len(bins)
    bar = max(min(slot * 0.38, 28), 1.0)
    name = html.escape(feature.name)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Training and current distribution of {name}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for i in range(5):  # gridlines and share labels
        share = top * i / 4
        y = MARGIN_TOP + plot_h - plot_h * share / top
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{width - MARGIN_RIGHT}" y2="{y:.1f}" '
            f'stroke="#e6e8eb"/><text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#57606a">{share * 100:g}%</text>'
        )
    for i, label in enumerate(bins):
        x0 = MARGIN_LEFT + i * slot + slot / 2
        for value, color, dx, who in (
            (training[i], TRAINING_COLOR, -bar, "training"),
            (current[i], CURRENT_COLOR, 0.0, "current"),
        ):
            h = plot_h * min(value, top) / top
            y = MARGIN_TOP + plot_h - h
            parts.append(
                f'<rect x="{x0 + dx:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{html.escape(label)}: {who} {value:.1%}</title></rect>'
            )
        shown = label if len(label) <= 22 else label[:21] + "…"
        ty = MARGIN_TOP + plot_h + 12
        parts.append(
            f'<text x="{x0:.1f}" y="{ty:.1f}" font-size="10" fill="#424a53" text-anchor="end" '
            f'transform="rotate(-40 {x0:.1f} {ty:.1f})">{html.escape(shown)}</text>'
        )
    base = MARGIN_TOP + plot_h
    parts.append(
        f'<line x1="{MARGIN_LEFT}" y1="{base}" x2="{width - MARGIN_RIGHT}" y2="{base}" '
        'stroke="#8c959f"/>'
    )
    lx = width - MARGIN_RIGHT - 170
    for offset, color, text in ((0, TRAINING_COLOR, "training"), (85, CURRENT_COLOR, "current")):
        parts.append(
            f'<rect x="{lx + offset}" y="6" width="12" height="12" fill="{color}"/>'
            f'<text x="{lx + offset + 16}" y="16" font-size="12" fill="#1f2328">{text}</text>'
        )
    parts.append(
        f'<text x="{MARGIN_LEFT}" y="16" font-size="12" font-weight="600" fill="#1f2328">'
        f"{name}</text></svg>"
    )
    return "".join(parts)


def _nice(value: float) -> float:
    """The y-axis top: the next of 1, 2, 2.5, 5 x 10^k above `value`, at most 100%."""
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return min(candidate, 1.0)
    return 1.0


def _summary_row(index: int, feature: FeatureDrift) -> str:
    change = feature.missing_change
    status = _status(feature)
    cells = [
        f'<a href="#f{index}">{html.escape(feature.name)}</a>',
        feature.role,
        feature.kind,
        f"{feature.rows:,}",
        _fmt(feature.psi),
        _fmt(feature.ks),
        _fmt(feature.js),
        "–" if change is None else f"{change:+.1%}",
        _fmt(feature.unseen_share, ".1%"),
        _fmt(feature.out_of_range_share, ".1%"),
    ]
    row_class = ' class="drift"' if feature.drifted else ""
    status_class = ' class="status-drift"' if feature.drifted else ""
    return (
        f"<tr{row_class}>"
        + "".join(f"<td>{cell}</td>" for cell in cells)
        + f"<td{status_class}>{status}</td></tr>"
    )


def _section(index: int, feature: FeatureDrift) -> str:
    drifted = feature.drifted
    badge_class = "bad" if drifted else "good"
    stats = [
        f"rows {feature.rows:,}",
        f"PSI {_fmt(feature.psi)}",
    ]
    if feature.ks is not None:
        stats.append(f"KS {_fmt(feature.ks)}")
    if feature.js is not None:
        stats.append(f"JS distance {_fmt(feature.js)}")
    if feature.chi_square is not None:
        stats.append(f"chi² {feature.chi_square:.1f} (p {feature.chi_square_p:.2g})")
    stats.append(f"missing {feature.missing_training:.1%} → {_fmt(feature.missing_current, '.1%')}")
    if feature.unseen_share is not None:
        stats.append(f"unseen {feature.unseen_share:.1%}")
    if feature.out_of_range_share is not None:
        stats.append(f"out of range {feature.out_of_range_share:.1%}")
    reasons = ""
    if feature.reasons and drifted:
        reasons = f'<div class="reasons">{html.escape("; ".join(feature.reasons))}</div>'
    unseen = ""
    if feature.unseen_values:
        listed = ", ".join(
            f"{html.escape(repr(value))} {share:.1%}" for value, share in feature.unseen_values
        )
        unseen = f'<div class="reasons">New values: {listed}</div>'
    return (
        f'<section id="f{index}"><h2>{html.escape(feature.name)}'
        f'<span class="badge {badge_class}">{_status(feature)}</span></h2>'
        f'<div class="stats">{feature.role} · {feature.kind} · {" · ".join(stats)}</div>'
        f"{reasons}{unseen}{render_svg(feature)}</section>"
    )


def render_html(report: DriftReport) -> str:
    """The whole report page."""
    drifted = report.drifted
    verdict = (
        f"Drift in {len(drifted)} of {len(report.features)} features"
        if drifted
        else f"No drift in {len(report.features)} features"
    )
    thresholds = ", ".join(
        f"{key} {value}" for key, value in vars(report.thresholds).items() if value is not None
    )
    header = (
        "<tr><th>feature</th><th>role</th><th>kind</th><th>rows</th><th>PSI</th><th>KS</th>"
        "<th>JS</th><th>missing Δ</th><th>unseen</th><th>out of range</th><th>status</th></tr>"
    )
    rows = "".join(_summary_row(i, f) for i, f in enumerate(report.features))
    sections = "".join(_section(i, f) for i, f in enumerate(report.features))
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Drift report: {report.label}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<div class="meta">{report.rows:,} current rows against {report.training_rows:,} '
        f"training rows · thresholds: {html.escape(thresholds)} · {created}</div>"
        f'<div class="verdict {"bad" if drifted else "good"}">{verdict}</div>'
        + "".join(f'<div class="meta">Note: {html.escape(note)}</div>' for note in report.notes)
        + f"<table>{header}{rows}</table>{sections}"
        '<div class="meta">keras-bundle drift report: bars are shares of rows per bin; '
        "training in blue, current in orange.</div></body></html>\n"
    )
