"""Synthetic labelled ECG rhythms from several simulated hospitals (offline, deterministic).

Beat morphology comes from neurokit2's ECGSYN model (``nk.ecg_simulate(method="ecgsyn")``,
McSharry et al., IEEE TBME 2003): P, Q, R, S, T as Gaussian bumps on a limit cycle, shaped by
the angles ``ti``, amplitudes ``ai`` and widths ``bi``. ECGSYN costs ~30 ms per 5 s record at
100 Hz (~30 s for 1000 records) and neurokit2's fast ``method="simple"`` only tiles a db10
wavelet (no P/QRS/T structure, QRS width scales with the rate), so we call ECGSYN once per
beat template (a small bank per hospital and class, ~80 calls) and compose records by
placing templates at the RR intervals of each class, with a Bazett-like sqrt(RR) scaling of
the P and T timing. neurokit2 has no rhythm-class generator; the composition is ours.

Classes (rhythm AND morphology differ):
  0 normal sinus rhythm: 60-90 bpm, regular (small respiratory variability), P wave.
  1 tachycardia (wide-complex, VT-like): 110-160 bpm, regular, no P wave, QRS ~2.5x wider,
    discordant (inverted) T wave.
  2 bradycardia: 35-55 bpm, regular, normal P-QRS-T.
  3 irregular (AF-like): 70-130 bpm mean, irregularly irregular RR (coefficient of variation
    0.15-0.3, independent draws), no P wave, fibrillatory 4-9 Hz baseline waves.
Four more classes (``num_classes`` 5-8) sit at normal rates, so only morphology or a local
event tells them apart from class 0 (a linear model on the raw signal cannot, a CNN can):
  4 premature ventricular contractions: sinus 60-90 bpm in which 15-35% of the beats (at
    least one in the window, never two in a row) come 30-45% of an RR early with a wide,
    P-less, discordant-T ventricular complex, followed by the full compensatory pause.
  5 first-degree AV block: sinus 60-90 bpm with a PR interval of ~0.27 s (P at -100 deg of
    the ECGSYN cycle instead of -70 deg: PR > 0.2 s defines it).
  6 ST elevation: sinus 60-90 bpm with the ST segment raised by 10-25% of the R amplitude
    from the J point into the T wave (a smooth plateau added to the template).
  7 atrial flutter: F waves at 250-350 /min (a sawtooth, no P wave) conducted 2:1, 3:1 or
    4:1, so a regular ventricular rate of 62-175 bpm.
``num_classes = k`` keeps the first k classes.

Each simulated hospital has its own device and population: gain, noise level, powerline
(50 or 60 Hz), baseline wander, anti-alias low-pass cutoff, ADC quantisation, clock skew,
and its own P/R/T amplitude ratios (lead placement). ``site_shift = s > 0`` adds a stronger
shift per hospital (its population and lead): heart rates x exp(N(0, 0.06 s)), wave widths x
exp(N(0, 0.15 s)), P/T angles + N(0, 4 s) deg, noise and baseline wander x exp(N(0, 0.4 s)),
and an inverted lead with probability min(0.2 s, 0.5). ``RawData.sites`` names the hospital of
each record, so ``partition = "natural"`` makes each simulated hospital one client.
x: float32 [N, 1, T], each record standardised to mean 0, std 1. No official test split.
"""

from __future__ import annotations

import functools

import numpy as np
from pydantic import Field
from scipy import signal as sps

from ..registry import Params
from .base import DATASETS, RawData

CLASS_NAMES = [
    "normal_sinus", "tachycardia_wide_qrs", "bradycardia", "irregular_af_like",
    "premature_ventricular", "first_degree_av_block", "st_elevation", "atrial_flutter",
]

# ECGSYN defaults (angles in degrees, amplitudes, widths), McSharry et al. 2003.
_TI = np.array([-70.0, -15.0, 0.0, 15.0, 100.0])
_AI = np.array([1.2, -5.0, 30.0, -7.5, 0.75])
_BI = np.array([0.25, 0.1, 0.1, 0.1, 0.4])

_TEMPLATE_FS = 500  # Hz, resolution of the beat templates
_PRE, _POST = 0.35, 0.60  # template window around the R peak, seconds (at 60 bpm)
_QRS_HALF = 0.06  # seconds around R that keep their width when the rate changes
_BANK = 4  # templates per (hospital, class)


class ECGSyntheticParams(Params):
    num_sites: int = Field(5, ge=1, le=100, description="simulated hospitals")
    records_per_site: int = Field(200, ge=1, le=100_000)
    length_s: float = Field(5.0, ge=2.0, le=60.0, description="seconds per record")
    sampling_rate: int = Field(100, ge=50, le=1000, description="Hz")
    num_classes: int = Field(4, ge=2, le=8, description="keep the first k rhythm classes")
    noise: float = Field(1.0, ge=0.0, le=10.0, description="multiplier of all noise levels")
    class_alpha: float | None = Field(
        None, gt=0.0, description="None: balanced classes per hospital; a: Dirichlet(a) priors"
    )
    site_shift: float = Field(
        0.0, ge=0.0, le=3.0, description="extra per-hospital shift of rates, morphology, noise, polarity"
    )


def _ecgsyn_template(ai: np.ndarray, bi: np.ndarray, ti: np.ndarray, seed: int) -> np.ndarray:
    """One beat [-_PRE, +_POST] s around R at _TEMPLATE_FS, baseline 0, max |x| = 1."""
    import neurokit2 as nk  # heavy import; only when a synthetic ECG is generated

    sig = nk.ecg_simulate(
        duration=4, sampling_rate=_TEMPLATE_FS, heart_rate=60, heart_rate_std=0, noise=0,
        method="ecgsyn", random_state=seed, ti=tuple(ti), ai=tuple(ai), bi=tuple(bi),
    )
    sig = np.asarray(sig, dtype=np.float64)
    # R peak of the middle beat: largest |deviation| from the median in the 2nd second.
    mid = slice(int(1.5 * _TEMPLATE_FS), int(2.5 * _TEMPLATE_FS))
    r = mid.start + int(np.argmax(np.abs(sig[mid] - np.median(sig))))
    beat = sig[r - int(_PRE * _TEMPLATE_FS): r + int(_POST * _TEMPLATE_FS)].copy()
    k = int(0.03 * _TEMPLATE_FS)
    a, b = beat[:k].mean(), beat[-k:].mean()
    beat -= np.linspace(a, b, len(beat))  # remove the baseline under the window
    beat *= sps.windows.tukey(len(beat), 0.1)
    return beat / np.abs(beat).max()


def _class_shape(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ECGSYN (ai, bi, ti) of class c before jitter."""
    ai, bi, ti = _AI.copy(), _BI.copy(), _TI.copy()
    if c == 1:  # wide-complex: no P, QRS widths x2.5, discordant T
        ai[0] = 0.0
        bi[1:4] *= 2.5
        ti[1], ti[3] = -30.0, 30.0
        ai[4] = -1.5
    elif c in (3, 7):  # AF-like, flutter: no P wave
        ai[0] = 0.0
    elif c == 5:  # first-degree AV block: P earlier, PR ~ 0.27 s at 60 bpm
        ti[0] = -100.0
    return ai, bi, ti


def _st_plateau(n: int, elevation: float) -> np.ndarray:
    """ST elevation over a template of n samples: ``elevation`` from the J point (R + 40
    ms) to 280 ms after R, with 20 ms raised-cosine edges."""
    t = np.arange(n) / _TEMPLATE_FS - _PRE
    edge = 0.02

    def ramp(u):
        return 0.5 - 0.5 * np.cos(np.pi * np.clip(u / edge, 0.0, 1.0))

    return elevation * ramp(t - 0.04) * ramp(0.28 - t)


def _warp(t: np.ndarray, scale: float) -> np.ndarray:
    """Output time around R -> template time: QRS (|t| < _QRS_HALF) unchanged, P and T
    stretched by ``scale`` (Bazett-like, QT ~ sqrt(RR))."""
    a = np.abs(t)
    return np.where(a < _QRS_HALF, t, np.sign(t) * (_QRS_HALF + (a - _QRS_HALF) / scale))


def _rr_intervals(c: int, duration: float, rng: np.random.Generator,
                  rate: float = 1.0) -> np.ndarray:
    """Beat times (seconds) covering [-1, duration + 1] for class c; ``rate`` scales the
    heart rate (a hospital's population shift)."""
    if c in (0, 4, 5, 6):
        hr, cv = rng.uniform(60, 90), rng.uniform(0.01, 0.04)
    elif c == 1:
        hr, cv = rng.uniform(110, 160), rng.uniform(0.005, 0.02)
    elif c == 2:
        hr, cv = rng.uniform(35, 55), rng.uniform(0.01, 0.04)
    elif c == 3:
        hr, cv = rng.uniform(70, 130), rng.uniform(0.15, 0.30)
    else:  # flutter: F waves 250-350 /min conducted 2:1, 3:1 or 4:1
        hr, cv = rng.uniform(250, 350) / int(rng.integers(2, 5)), rng.uniform(0.003, 0.01)
    mean_rr = 60.0 / (hr * rate)
    n = int((duration + 2) / mean_rr * 1.6) + 4
    if c == 3:  # irregularly irregular: independent log-normal RR, refractory floor
        rr = mean_rr * np.exp(rng.normal(-0.5 * cv**2, cv, n))
        rr = np.maximum(rr, 0.3)
    else:  # regular with respiratory sinus arrhythmia (0.2-0.35 Hz) and small jitter
        f_resp, ph = rng.uniform(0.2, 0.35), rng.uniform(0, 2 * np.pi)
        k = np.arange(n)
        rr = mean_rr * (1 + cv * np.sin(2 * np.pi * f_resp * k * mean_rr + ph)
                        + 0.3 * cv * rng.standard_normal(n))
    times = -1.0 - rng.uniform(0, mean_rr) + np.cumsum(rr)
    return times[times < duration + 1.0]


def _site_profile(rng: np.random.Generator, fs: int) -> dict:
    nyq = fs / 2
    return {
        "gain": rng.uniform(0.6, 1.6),
        "noise": rng.uniform(0.5, 1.5),
        "mains": float(rng.choice([50.0, 60.0])),
        "mains_amp": rng.uniform(0.0, 0.08),
        "wander": rng.uniform(0.05, 0.3),
        "cutoff": min(rng.uniform(20.0, 45.0), 0.9 * nyq),
        "lsb": float(rng.choice([0.0, 0.005, 0.01, 0.02])),
        "clock": rng.uniform(0.98, 1.02),
        "wave_scale": rng.uniform(0.75, 1.25, 5),  # P, Q, R, S, T amplitude (lead axis)
    }


def _site_shift(rng: np.random.Generator, s: float) -> dict:
    """The extra per-hospital shift of ``site_shift = s`` (identity when s = 0, no draws)."""
    if s == 0:
        return {"rate": 1.0, "width": np.ones(5), "angle": np.zeros(5), "noise_x": 1.0,
                "wander_x": 1.0, "polarity": 1.0}
    angle = rng.normal(0.0, 4.0 * s, 5)
    angle[1:4] = 0.0  # Q, R, S stay at the R peak
    return {
        "rate": float(np.exp(rng.normal(0.0, 0.06 * s))),
        "width": np.exp(rng.normal(0.0, 0.15 * s, 5)),
        "angle": angle,
        "noise_x": float(np.exp(rng.normal(0.0, 0.4 * s))),
        "wander_x": float(np.exp(rng.normal(0.0, 0.4 * s))),
        "polarity": -1.0 if rng.random() < min(0.2 * s, 0.5) else 1.0,
    }


def _make_bank(profile: dict, n_classes: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Templates per class; class 4 (PVC) holds _BANK sinus beats then _BANK ventricular
    beats (the wide-complex shape of class 1)."""
    bank = []
    for c in range(n_classes):
        shapes = [_class_shape(0), _class_shape(1)] if c == 4 else [_class_shape(c)]
        temps = []
        for ai0, bi0, ti0 in shapes:
            for _ in range(_BANK):
                ai = ai0 * profile["wave_scale"] * rng.uniform(0.85, 1.15, 5)
                bi = bi0 * rng.uniform(0.85, 1.15, 5) * profile["width"]
                ti = ti0 + rng.uniform(-5, 5, 5) * (ti0 != 0) + profile["angle"]
                tpl = _ecgsyn_template(ai, bi, ti, int(rng.integers(2**31)))
                if c == 6:
                    tpl = tpl + _st_plateau(len(tpl), rng.uniform(0.10, 0.25))
                temps.append(tpl)
        bank.append(temps)
    return bank


def _record(c: int, bank: list[list[np.ndarray]], profile: dict, p: ECGSyntheticParams,
            rng: np.random.Generator) -> np.ndarray:
    fs, dur = p.sampling_rate, p.length_s
    n = int(round(dur * fs))
    t = np.arange(n) / fs * profile["clock"]
    if c == 4:  # one sinus template and one ventricular template
        tpl = bank[c][int(rng.integers(_BANK))]
        ectopic_tpl = bank[c][_BANK + int(rng.integers(_BANK))]
    else:
        tpl = bank[c][int(rng.integers(len(bank[c])))]
    tau = np.arange(len(tpl)) / _TEMPLATE_FS - _PRE
    x = np.zeros(n)
    beats = _rr_intervals(c, dur, rng, profile["rate"])
    resp_f, resp_ph = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
    mean_rr = float(np.diff(beats).mean()) if len(beats) > 1 else 1.0
    scale = float(np.clip(np.sqrt(mean_rr), 0.6, 1.2))  # Bazett: QT ~ sqrt(RR in s)
    ectopic = np.zeros(len(beats), dtype=bool)
    if c == 4:
        beats, ectopic = _premature_beats(beats, mean_rr, dur, rng)
    for tb, ect in zip(beats, ectopic):
        lo = np.searchsorted(t, tb - _PRE * 1.3)
        hi = np.searchsorted(t, tb + _POST * 1.3)
        if hi <= lo:
            continue
        local = _warp(t[lo:hi] - tb, scale)
        amp = rng.uniform(0.93, 1.07) * (1 + 0.08 * np.sin(2 * np.pi * resp_f * tb + resp_ph))
        x[lo:hi] += amp * np.interp(local, tau, ectopic_tpl if ect else tpl, left=0.0, right=0.0)
    if c == 3:  # fibrillatory waves: 2-3 drifting 4-9 Hz components
        for _ in range(int(rng.integers(2, 4))):
            f = rng.uniform(4, 9) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
            x += rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * np.cumsum(f) / fs + rng.uniform(0, 6.3))
    if c == 7:  # flutter waves: a sawtooth (slow rise, fast fall) at 250-350 /min
        f_flutter = 60.0 / mean_rr * rng.uniform(0.97, 1.03)
        f_flutter *= max(1, int(round(rng.uniform(250, 350) / 60.0 / f_flutter)))
        x += rng.uniform(0.08, 0.15) * sps.sawtooth(
            2 * np.pi * f_flutter * t + rng.uniform(0, 6.3), width=0.8)
    x *= profile["gain"] * rng.uniform(0.7, 1.3) * profile["polarity"]
    lvl = p.noise * profile["noise"] * profile["noise_x"]
    if lvl > 0:
        wander = sum(
            rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6.3))
            for _ in range(2)
        )
        x += lvl * profile["wander"] * profile["wander_x"] * wander
        x += lvl * profile["mains_amp"] * np.sin(2 * np.pi * profile["mains"] * t + rng.uniform(0, 6.3))
        x += lvl * rng.uniform(0.02, 0.08) * rng.standard_normal(n)
        if rng.random() < 0.2:  # a short motion artefact burst
            i0, w = int(rng.integers(n)), int(rng.integers(fs // 10, fs // 2))
            seg = x[i0:i0 + w]  # a view: += writes into x
            seg += lvl * rng.uniform(0.1, 0.4) * rng.standard_normal(len(seg)).cumsum() / np.sqrt(w)
    return x


def _premature_beats(beats: np.ndarray, mean_rr: float, duration: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Make 15-35% of the beats premature ventricular contractions: each comes 30-45% of
    an RR early, the next sinus beat keeps its time (the full compensatory pause); never
    two in a row, at least one inside [0.5, duration - 0.5] s."""
    n = len(beats)
    p = rng.uniform(0.15, 0.35)
    ect = np.zeros(n, dtype=bool)
    inside = np.flatnonzero((beats > 0.5) & (beats < duration - 0.5))
    for i in range(1, n):
        if not ect[i - 1] and rng.random() < p:
            ect[i] = True
    if len(inside) and not ect[inside].any():
        i = int(inside[int(rng.integers(len(inside)))])
        ect[max(i - 1, 0): i + 2] = False
        ect[i] = True
    out = beats.copy()
    out[ect] -= mean_rr * rng.uniform(0.30, 0.45, int(ect.sum()))
    return out, ect


@functools.lru_cache(maxsize=8)
def _generate(params_json: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = ECGSyntheticParams.model_validate_json(params_json)
    fs = p.sampling_rate
    site_seqs = np.random.SeedSequence([seed, 0xEC6]).spawn(p.num_sites)
    xs, ys, ss = [], [], []
    for h, seq in enumerate(site_seqs):
        streams = seq.spawn(5)  # the first four as before: defaults give the same data
        rng_prof, rng_bank, rng_lab, rng_rec, rng_shift = (np.random.default_rng(s) for s in streams)
        profile = _site_profile(rng_prof, fs) | _site_shift(rng_shift, p.site_shift)
        bank = _make_bank(profile, p.num_classes, rng_bank)
        m = p.records_per_site
        if p.class_alpha is None:
            y = np.arange(m) % p.num_classes
            rng_lab.shuffle(y)
        else:
            prior = rng_lab.dirichlet(np.full(p.num_classes, p.class_alpha))
            y = rng_lab.choice(p.num_classes, size=m, p=prior)
        x = np.stack([_record(int(c), bank, profile, p, rng_rec) for c in y])
        # Device: anti-alias low-pass, then ADC quantisation (in units of the R amplitude).
        sos = sps.butter(4, profile["cutoff"], fs=fs, output="sos")
        x = sps.sosfiltfilt(sos, x, axis=1)
        if profile["lsb"] > 0:
            x = np.round(x / (profile["lsb"] * profile["gain"])) * profile["lsb"] * profile["gain"]
        xs.append(x)
        ys.append(y.astype(np.int64))
        ss.append(np.full(m, f"hospital_{h}"))
    x = np.concatenate(xs)
    x = (x - x.mean(axis=1, keepdims=True)) / np.maximum(x.std(axis=1, keepdims=True), 1e-8)
    return x[:, None, :].astype(np.float32), np.concatenate(ys), np.concatenate(ss)


@DATASETS.register("ecg_synthetic", ECGSyntheticParams, modality="ecg")
def load_ecg_synthetic(params: ECGSyntheticParams, seed: int) -> RawData:
    """x float32 [num_sites * records_per_site, 1, round(length_s * sampling_rate)],
    y int64, sites "hospital_<h>". Same params and seed -> same arrays (cached in-process)."""
    x, y, sites = _generate(params.model_dump_json(), int(seed))
    return RawData(
        x=x.copy(),
        y=y.copy(),
        modality="ecg",
        num_classes=params.num_classes,
        class_names=CLASS_NAMES[: params.num_classes],
        sites=sites.copy(),
        notes=(
            f"synthetic ECG: {params.num_sites} hospitals x {params.records_per_site} records, "
            f"{params.length_s:g} s at {params.sampling_rate} Hz, {params.num_classes} rhythm classes",
        ),
    )
