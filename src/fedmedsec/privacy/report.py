"""The per-hospital privacy report: what each hospital's participation cost it in privacy.

``privacy_report`` builds ``summary.json["privacy_report"]``, one entry per hospital keyed
by partition id: its (epsilon, delta) guarantee, the membership-inference attacks against
the final model on its own records, its reconstruction quality against the baseline when it
was the curious server's target, and the run's privacy defenses. ``privacy_section_html``
renders that map (and ``reconstruction.png`` when the run directory has one) as an HTML
fragment for ``fedmedsec report``; ``privacy_line`` is the CLI's one-line digest.

Which epsilon: with DP-SGD each hospital's own cumulative record-level epsilon, from the
accountant history its replies reported (hospitals with fewer records or more rounds
sampled spend more); with DP-FedAvg (``privacy.mode = "central"``) the client-level epsilon
of the run, the same for every hospital (or null, with the reason, when the rule does not
have the mean's sensitivity); none without DP.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

__all__ = ["RECONSTRUCTION_KEYS", "privacy_line", "privacy_report", "privacy_section_html"]

#: the reconstruction scores a hospital's entry carries (each beside its baseline)
RECONSTRUCTION_KEYS = ("psnr", "baseline_psnr", "ssim", "baseline_ssim", "correlation",
                       "baseline_correlation", "mse", "baseline_mse", "label_accuracy")


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def privacy_report(
    hospitals: dict[int, str],
    privacy: dict[str, Any],
    *,
    epsilons: dict[int, float],
    run_privacy: dict[str, Any],
    membership: dict[str, Any] | None,
    reconstruction: dict[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """{str(partition id): entry} for every hospital.

    hospitals: partition id -> name. privacy: the resolved ``[privacy]`` section (a dict).
    epsilons: partition id -> the hospital's latest cumulative DP-SGD epsilon (from its
    replies). run_privacy: ``Coordinator.privacy_summary()`` (epsilon, delta, epsilon_note).
    membership: ``summary.json["membership_inference"]`` or None. reconstruction:
    ``summary.json["reconstruction"]`` or None.

    entry: hospital (name); epsilon, delta, epsilon_level ("record", "client" or None),
    epsilon_note; mia_auc, mia_tpr_at_1pct_fpr, mia_members, mia_nonmembers (loss threshold,
    the hospital's training records against its test split); lira_auc,
    lira_tpr_at_1pct_fpr (None without LiRA or with too few targets); reconstruction (the
    scores of ``RECONSTRUCTION_KEYS``, round, observed, beats_baseline; None unless it was
    the target of an audit that ran); defenses (the privacy section)."""
    mode = privacy.get("mode", "none")
    mia = membership or {}
    lira = (mia.get("lira") or {}).get("per_hospital") or {}
    rec = reconstruction if reconstruction and "skipped" not in reconstruction else None
    out: dict[str, dict[str, Any]] = {}
    for pid, name in sorted(hospitals.items()):
        key = str(pid)
        if mode == "dp_sgd":
            eps, level, note = _finite(epsilons.get(pid)), "record", None
            if eps is None:
                note = "no reply of this hospital reported an epsilon (never sampled, or dropped)"
        elif mode == "central":
            eps, level, note = _finite(run_privacy.get("epsilon")), "client", run_privacy.get("epsilon_note")
        else:
            eps, level, note = None, None, None
        n = (mia.get("per_hospital_n") or {}).get(key) or [None, None]
        entry: dict[str, Any] = {
            "hospital": name,
            "epsilon": eps, "delta": run_privacy.get("delta") if level else None,
            "epsilon_level": level, "epsilon_note": note,
            "mia_auc": _finite((mia.get("per_hospital_auc") or {}).get(key)),
            "mia_tpr_at_1pct_fpr": _finite((mia.get("per_hospital_tpr_at_1pct_fpr") or {}).get(key)),
            "mia_members": n[0], "mia_nonmembers": n[1],
            "lira_auc": _finite((lira.get(key) or {}).get("auc")),
            "lira_tpr_at_1pct_fpr": _finite((lira.get(key) or {}).get("tpr_at_1pct_fpr")),
            "reconstruction": None,
            "defenses": dict(privacy),
        }
        if rec is not None and rec.get("target_hospital") == pid:
            scores = {k: rec.get(k) for k in RECONSTRUCTION_KEYS}
            beats = None
            if scores["mse"] is not None and scores["baseline_mse"] is not None:
                beats = bool(scores["mse"] < scores["baseline_mse"])
            entry["reconstruction"] = {**scores, "round": rec.get("round"), "observed": rec.get("observed"),
                                       "records": rec.get("records"), "beats_baseline": beats}
        out[key] = entry
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def privacy_line(summary: dict[str, Any]) -> str | None:
    """One line for the CLI: the largest per-hospital epsilon and MIA AUC (with the
    hospital) and the reconstruction against its baseline; None without a report."""
    rep = summary.get("privacy_report") or {}
    if not rep:
        return None
    parts = []
    eps = {k: e["epsilon"] for k, e in rep.items() if e.get("epsilon") is not None}
    if eps:
        k = max(eps, key=eps.get)
        parts.append(f"largest epsilon {eps[k]:.2f} ({rep[k]['hospital']})")
    auc = {k: e["mia_auc"] for k, e in rep.items() if e.get("mia_auc") is not None}
    if auc:
        k = max(auc, key=auc.get)
        parts.append(f"largest MIA AUC {auc[k]:.3f} ({rep[k]['hospital']})")
    rec = summary.get("reconstruction")
    if rec and "skipped" in rec:
        parts.append(f"reconstruction skipped: {rec['skipped']}")
    elif rec:
        name = rep.get(str(rec.get("target_hospital")), {}).get("hospital", rec.get("target_hospital"))
        metric = "psnr" if rec.get("psnr") is not None else "correlation"
        unit = " dB" if metric == "psnr" else ""
        parts.append(f"reconstruction of {name} ({rec.get('observed')}): {metric} {_fmt(rec.get(metric), 2)}{unit} "
                     f"vs baseline {_fmt(rec.get('baseline_' + metric), 2)}{unit}")
    if not parts:
        return f"privacy report: {len(rep)} hospitals, no privacy measurement in this run"
    return "privacy report (summary.json privacy_report): " + "; ".join(parts)


def privacy_section_html(summary: dict[str, Any], run_dir: str | Path | None = None) -> str:
    """An HTML fragment (``<section>``) for the report page: the run's privacy defenses, a
    table with one row per hospital (epsilon, delta, loss-threshold MIA AUC and TPR at 1% FPR,
    LiRA's, reconstruction against the baseline), the reconstruction audit's settings and
    scores, and ``run_dir/reconstruction.png`` embedded as a data URI when present. Empty
    string when the summary has no ``privacy_report``. Every value is HTML-escaped."""
    rep = summary.get("privacy_report") or {}
    if not rep:
        return ""
    e = html.escape
    first = next(iter(rep.values()))
    defenses = ", ".join(f"{k} = {v}" for k, v in (first.get("defenses") or {}).items() if v is not None)
    parts = ["<section class='privacy-report'>", "<h2>Privacy per hospital</h2>",
             f"<p>Defenses: {e(defenses) or 'none'}.</p>"]
    head = ["id", "hospital", "epsilon", "delta", "MIA AUC", "MIA TPR@1%FPR", "LiRA AUC", "LiRA TPR@1%FPR",
            "reconstruction (vs baseline)"]
    parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for pid, entry in rep.items():
        r = entry.get("reconstruction")
        if r:
            metric = "psnr" if r.get("psnr") is not None else "correlation"
            rtxt = f"{metric} {_fmt(r.get(metric), 2)} vs {_fmt(r.get('baseline_' + metric), 2)}"
        else:
            rtxt = "-"
        eps = _fmt(entry.get("epsilon"), 2)
        if entry.get("epsilon_level"):
            eps += f" ({entry['epsilon_level']})"
        cells = [pid, entry.get("hospital"), eps, _fmt(entry.get("delta"), 6), _fmt(entry.get("mia_auc")),
                 _fmt(entry.get("mia_tpr_at_1pct_fpr")), _fmt(entry.get("lira_auc")),
                 _fmt(entry.get("lira_tpr_at_1pct_fpr")), rtxt]
        parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    parts.append("</tbody></table>")
    notes = {entry.get("epsilon_note") for entry in rep.values() if entry.get("epsilon_note")}
    parts += [f"<p class='note'>{e(str(n))}</p>" for n in sorted(notes)]
    rec = summary.get("reconstruction")
    if rec and "skipped" in rec:
        parts.append(f"<p>Reconstruction audit skipped: {e(str(rec['skipped']))}</p>")
    elif rec:
        parts.append("<h3>Reconstruction by the curious server</h3>")
        settings = {**(rec.get("settings") or {}), "observed": rec.get("observed"), "round": rec.get("round"),
                    "hospitals_in_sum": rec.get("hospitals_in_sum"), "baseline": rec.get("baseline")}
        parts.append("<p>" + e(", ".join(f"{k} = {v}" for k, v in settings.items() if v is not None)) + "</p>")
        parts.append("<table><thead><tr><th>metric</th><th>reconstruction</th><th>baseline guess</th></tr>"
                     "</thead><tbody>")
        for k in ("psnr", "ssim", "correlation", "mse"):
            if rec.get(k) is not None:
                parts.append(f"<tr><td>{k}</td><td>{e(_fmt(rec.get(k), 4))}</td>"
                             f"<td>{e(_fmt(rec.get('baseline_' + k), 4))}</td></tr>")
        parts.append(f"<tr><td>label accuracy</td><td>{e(_fmt(rec.get('label_accuracy')))}</td><td>-</td></tr>")
        parts.append("</tbody></table>")
        png = Path(run_dir) / "reconstruction.png" if run_dir is not None else None
        if png is not None and png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append("<figure><img alt='reconstruction.png' src='data:image/png;base64," + data + "'>"
                         "<figcaption>" + ("Originals (top) and the server's reconstructions (bottom)"
                                           if rec.get("modality") == "image" else
                                           "Originals (solid) and the server's reconstructions (dashed)")
                         + "</figcaption>"
                         "</figure>")
    parts.append("</section>")
    return "\n".join(parts)
