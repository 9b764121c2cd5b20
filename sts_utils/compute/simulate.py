"""The simulated ``demo`` cohort: conductance-based single-compartment neurons of four classes.

Each class is a minimal Hodgkin–Huxley model of the kind fitted by Pospischil et al. (2008,
Biol Cybern 99:427) to cortical recordings, with the class-defining current added:

=============  ===================================================  ==========================
class          model                                                 defining mechanism
=============  ===================================================  ==========================
Excitatory     regular spiking (RS)                                  M-current -> adaptation
Pvalb          fast spiking (FS)                                     fast K kinetics, no M
Sst            low-threshold spiking (LTS)                           T-type Ca -> rebound, M
Vip/Lamp5      delayed / irregular spiking                           slowly inactivating D-type
                                                                     K (Golomb et al. 2007),
                                                                     high input resistance
=============  ===================================================  ==========================

Every cell draws its size, conductances, leak, threshold shift and noise amplitude from a
class distribution (log-normal spreads), so classes overlap the way real ones do. The protocol
mimics the Allen/patch-seq long-square protocol: 1-s current steps after a baseline, a few
hyperpolarizing steps, and steps on a 20 pA grid from 40 pA below the cell's own rheobase up to
``rheobase + 120 pA``, sampled at 50 kHz, with Ornstein–Uhlenbeck current noise and recording
noise. Integration is exponential Euler for the gates and forward Euler for the voltage at the
sampling step (20 µs), compiled with numba one trace at a time (:func:`integrate_numpy`, the former
NumPy integrator vectorised over all sweeps of a batch, is kept as the reference it is tested against).

Units inside the integrator: mV, ms, mS/cm², µF/cm², µA/cm². Public arrays use s, mV and pA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd
from tqdm import tqdm

from sts_utils.core.config import CLASSES, check_choice, logger, progress_stream

E_NA_MV, E_K_MV, E_CA_MV = 50.0, -90.0, 120.0


@dataclass(frozen=True)
class Protocol:
    """Timing and amplitudes of the simulated long-square protocol.

    Attributes
    ----------
    sampling_rate_hz
        Sampling (and integration) rate.
    baseline_s, step_s, post_s
        Duration before, of, and after the current step. The stimulus starts at ``baseline_s``.
    grid_pa
        Spacing of the step amplitudes around rheobase.
    below_rheobase_steps, above_rheobase_steps
        Number of grid steps below / above rheobase that are recorded.
    hyperpolarizing_pa
        Negative steps recorded for sag, input resistance, tau and rebound.
    max_rheobase_pa
        Upper end of the rheobase search.
    """

    sampling_rate_hz: float = 50_000.0
    baseline_s: float = 0.2
    step_s: float = 1.0
    post_s: float = 0.2
    grid_pa: float = 20.0
    below_rheobase_steps: int = 2
    above_rheobase_steps: int = 6
    hyperpolarizing_pa: tuple[float, ...] = (-90.0, -50.0)
    max_rheobase_pa: float = 1280.0

    @property
    def duration_s(self) -> float:
        return self.baseline_s + self.step_s + self.post_s

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sampling_rate_hz))

    def amplitudes_pa(self, rheobase_pa: float) -> list[float]:
        """Step amplitudes of one cell: hyperpolarizing steps, then the grid around rheobase."""
        grid = [rheobase_pa + k * self.grid_pa for k in range(-self.below_rheobase_steps, self.above_rheobase_steps + 1)]
        grid = [a for a in grid if a > 0]
        return sorted(set(list(self.hyperpolarizing_pa) + grid))


# Class distributions: (median, log-sd) per parameter; log-sd 0 means fixed.
# Conductances in mS/cm², potentials in mV, diameter in µm, tau in ms, noise in µA/cm².
CLASS_PARAMETERS: dict[str, dict[str, tuple[float, float]]] = {
    "Excitatory": dict(diam_um=(75.0, 0.15), g_leak=(0.045, 0.3), e_leak=(-72.0, 0.04), g_na=(50.0, 0.15),
                        g_kd=(5.0, 0.25), g_m=(0.05, 0.45), tau_m_max=(900.0, 0.3), g_t=(0.02, 1.0),
                        g_d=(0.05, 1.0), tau_d_b=(150.0, 0.3), v_t=(-56.0, 0.04), k_speed=(1.0, 0.2),
                        noise=(0.09, 0.4)),
    "Pvalb": dict(diam_um=(68.0, 0.15), g_leak=(0.07, 0.3), e_leak=(-70.0, 0.04), g_na=(60.0, 0.15),
                   g_kd=(12.0, 0.3), g_m=(0.008, 0.8), tau_m_max=(500.0, 0.3), g_t=(0.02, 1.0),
                   g_d=(0.05, 1.0), tau_d_b=(150.0, 0.3), v_t=(-57.0, 0.04), k_speed=(2.4, 0.3),
                   noise=(0.10, 0.4)),
    "Sst": dict(diam_um=(62.0, 0.15), g_leak=(0.03, 0.3), e_leak=(-68.0, 0.04), g_na=(50.0, 0.15),
                 g_kd=(5.0, 0.25), g_m=(0.04, 0.45), tau_m_max=(1000.0, 0.3), g_t=(0.4, 0.5),
                 g_d=(0.1, 1.0), tau_d_b=(200.0, 0.3), v_t=(-54.0, 0.04), k_speed=(1.5, 0.25),
                 noise=(0.08, 0.4)),
    "Vip/Lamp5": dict(diam_um=(50.0, 0.15), g_leak=(0.035, 0.3), e_leak=(-70.0, 0.04), g_na=(50.0, 0.15),
                       g_kd=(5.0, 0.25), g_m=(0.02, 0.6), tau_m_max=(600.0, 0.3), g_t=(0.08, 1.0),
                       g_d=(0.5, 0.6), tau_d_b=(300.0, 0.4), v_t=(-55.0, 0.04), k_speed=(1.3, 0.25),
                       noise=(0.14, 0.4)),
}
PARAMETER_NAMES: tuple[str, ...] = tuple(CLASS_PARAMETERS["Excitatory"])


def draw_cell_parameters(labels: list[str] | np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Draw one parameter set per cell from its class distribution (log-normal around the median).

    Potentials (``e_leak``, ``v_t``) are negative, so their spread is applied to the magnitude.
    """
    rows = []
    for label in labels:
        check_choice(label, CLASS_PARAMETERS, "class")
        spec = CLASS_PARAMETERS[label]
        row = {}
        for name in PARAMETER_NAMES:
            median, log_sd = spec[name]
            row[name] = median * float(np.exp(rng.normal(0.0, log_sd))) if log_sd > 0 else median
        rows.append(row)
    return pd.DataFrame(rows, columns=list(PARAMETER_NAMES))


def _vtrap(x: np.ndarray, y: float) -> np.ndarray:
    """x / (exp(x/y) - 1), continuous at x = 0 (where it equals y)."""
    small = np.abs(x / y) < 1e-6
    safe = np.where(small, 1.0, x)
    return np.where(small, y * (1.0 - x / y / 2.0), safe / np.expm1(safe / y))


@dataclass
class _State:
    v: np.ndarray
    m: np.ndarray
    h: np.ndarray
    n: np.ndarray
    p: np.ndarray
    u: np.ndarray
    a: np.ndarray
    b: np.ndarray
    noise: np.ndarray = field(default=None)  # type: ignore[assignment]

    def take(self, index: np.ndarray) -> "_State":
        return _State(**{k: (None if v is None else v[index].copy()) for k, v in self.__dict__.items()})


def _steady_gates(v: np.ndarray, p: dict[str, np.ndarray]) -> _State:
    vt = p["v_t"]
    am, bm = 0.32 * _vtrap(-(v - vt - 13.0), 4.0), 0.28 * _vtrap(v - vt - 40.0, 5.0)
    ah, bh = 0.128 * np.exp(-(v - vt - 17.0) / 18.0), 4.0 / (1.0 + np.exp(-(v - vt - 40.0) / 5.0))
    an, bn = 0.032 * _vtrap(-(v - vt - 15.0), 5.0), 0.5 * np.exp(-(v - vt - 10.0) / 40.0)
    return _State(
        v=v.copy(), m=am / (am + bm), h=ah / (ah + bh), n=an / (an + bn),
        p=1.0 / (1.0 + np.exp(-(v + 35.0) / 10.0)),
        u=1.0 / (1.0 + np.exp((v + 81.0) / 4.0)),
        a=1.0 / (1.0 + np.exp(-(v + 50.0) / 20.0)),
        b=1.0 / (1.0 + np.exp((v + 70.0) / 6.0)),
        noise=np.zeros_like(v),
    )


def integrate_numpy(
    state: _State,
    p: dict[str, np.ndarray],
    current_density: np.ndarray,
    onset_step: int,
    offset_step: int,
    n_steps: int,
    dt_ms: float,
    rng: np.random.Generator | None,
    record: bool,
    progress: bool = False,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Reference integrator in NumPy, vectorised over traces (the simulator before numba; kept for tests and the benchmark).

    Advances all traces ``n_steps`` steps; a step current flows during [onset, offset).

    Returns the recorded voltage (traces × samples, float32 mV) when ``record``, and a boolean per
    trace telling whether it crossed 0 mV during the step (a spike), used by the rheobase search.
    """
    n_tr = state.v.shape[0]
    vt, k = p["v_t"], p["k_speed"]
    g_l, e_l, g_na, g_kd, g_m, g_t, g_d = (p[x] for x in ("g_leak", "e_leak", "g_na", "g_kd", "g_m", "g_t", "g_d"))
    tau_m_max, tau_d_b, noise_sd = p["tau_m_max"], p["tau_d_b"], p["noise"]
    tau_noise_ms = 3.0
    noise_gain = noise_sd * np.sqrt(2.0 * dt_ms / tau_noise_ms)
    out = np.empty((n_tr, n_steps), dtype=np.float32) if record else None
    spiked = np.zeros(n_tr, dtype=bool)
    s = state
    iterator = range(n_steps)
    if progress:
        iterator = tqdm(iterator, desc="integrating", mininterval=2.0, leave=False)
    for step in iterator:
        v = s.v
        # Na / Kd (Traub–Miles with threshold shift v_t; k_speed scales the K and Na-inactivation rates)
        am, bm = 0.32 * _vtrap(-(v - vt - 13.0), 4.0), 0.28 * _vtrap(v - vt - 40.0, 5.0)
        ah, bh = 0.128 * np.exp(-(v - vt - 17.0) / 18.0), 4.0 / (1.0 + np.exp(-(v - vt - 40.0) / 5.0))
        an, bn = 0.032 * _vtrap(-(v - vt - 15.0), 5.0), 0.5 * np.exp(-(v - vt - 10.0) / 40.0)
        s.m += (am / (am + bm) - s.m) * -np.expm1(-dt_ms * (am + bm))
        s.h += (ah / (ah + bh) - s.h) * -np.expm1(-dt_ms * k * (ah + bh))
        s.n += (an / (an + bn) - s.n) * -np.expm1(-dt_ms * k * (an + bn))
        # M current (slow non-inactivating K)
        p_inf = 1.0 / (1.0 + np.exp(-(v + 35.0) / 10.0))
        tau_p = tau_m_max / (3.3 * np.exp((v + 35.0) / 20.0) + np.exp(-(v + 35.0) / 20.0))
        s.p += (p_inf - s.p) * -np.expm1(-dt_ms / tau_p)
        # T-type Ca (Destexhe et al. 1996, as in Pospischil's LTS model)
        s_inf = 1.0 / (1.0 + np.exp(-(v + 57.0) / 6.2))
        u_inf = 1.0 / (1.0 + np.exp((v + 81.0) / 4.0))
        tau_u = (30.8 + (211.4 + np.exp((v + 113.2) / 5.0)) / (1.0 + np.exp((v + 84.0) / 3.2))) / 3.7
        s.u += (u_inf - s.u) * -np.expm1(-dt_ms / tau_u)
        # D-type K (fast activation, slow inactivation -> delayed first spike)
        a_inf = 1.0 / (1.0 + np.exp(-(v + 50.0) / 20.0))
        b_inf = 1.0 / (1.0 + np.exp((v + 70.0) / 6.0))
        s.a += (a_inf - s.a) * -np.expm1(-dt_ms / 2.0)
        s.b += (b_inf - s.b) * -np.expm1(-dt_ms / tau_d_b)
        i_ion = (
            g_l * (v - e_l)
            + g_na * s.m**3 * s.h * (v - E_NA_MV)
            + (g_kd * s.n**4 + g_m * s.p + g_d * s.a**3 * s.b) * (v - E_K_MV)
            + g_t * s_inf**2 * s.u * (v - E_CA_MV)
        )
        i_stim = current_density if onset_step <= step < offset_step else 0.0
        if rng is not None:
            s.noise += -s.noise * (dt_ms / tau_noise_ms) + noise_gain * rng.standard_normal(n_tr)
            i_stim = i_stim + s.noise
        s.v = v + dt_ms * (i_stim - i_ion)  # C_m = 1 µF/cm²
        if onset_step <= step < offset_step:
            spiked |= s.v > 0.0
        if record:
            out[:, step] = s.v  # type: ignore[index]
        elif step % 500 == 0 and step > onset_step and spiked.all():
            break  # rheobase search: every trace has answered
    return out, spiked



_NOISE_TAU_MS = 3.0
#: Steps of noise drawn at once (the generator's stream is the same as one draw per step).
_NOISE_CHUNK_STEPS = 1000


@numba.njit(cache=True, inline="always")
def _vtrap_scalar(x: float, y: float) -> float:
    if abs(x / y) < 1e-6:
        return y * (1.0 - x / y / 2.0)
    return x / math.expm1(x / y)


@numba.njit(cache=True)
def _integrate_kernel(v, m, h, n, pm, u, a, b, noise, vt, k, g_l, e_l, g_na, g_kd, g_m, g_t, g_d, tau_m_max, tau_d_b,
                      noise_gain, current_density, onset_step, offset_step, step0, n_steps, dt_ms, z, use_noise, out,
                      record, spiked, stop_when_spiked):  # pragma: no cover - compiled
    """Advance every trace ``n_steps`` steps from global step ``step0``, one trace at a time.

    The same equations, in the same order of operations, as :func:`integrate_numpy`; a trace's state
    stays in registers across steps, which is what makes this ~10x faster than NumPy's array-at-a-time
    evaluation. ``z`` holds the standard-normal draws of the noise (steps x traces).
    """
    n_tr = v.shape[0]
    for i in range(n_tr):
        if stop_when_spiked and spiked[i]:
            continue
        vi, mi, hi, ni, pi, ui, ai, bi, qi = v[i], m[i], h[i], n[i], pm[i], u[i], a[i], b[i], noise[i]
        vti, ki = vt[i], k[i]
        for j in range(n_steps):
            step = step0 + j
            am = 0.32 * _vtrap_scalar(-(vi - vti - 13.0), 4.0)
            bm = 0.28 * _vtrap_scalar(vi - vti - 40.0, 5.0)
            ah = 0.128 * math.exp(-(vi - vti - 17.0) / 18.0)
            bh = 4.0 / (1.0 + math.exp(-(vi - vti - 40.0) / 5.0))
            an = 0.032 * _vtrap_scalar(-(vi - vti - 15.0), 5.0)
            bn = 0.5 * math.exp(-(vi - vti - 10.0) / 40.0)
            mi += (am / (am + bm) - mi) * -math.expm1(-dt_ms * (am + bm))
            hi += (ah / (ah + bh) - hi) * -math.expm1(-dt_ms * ki * (ah + bh))
            ni += (an / (an + bn) - ni) * -math.expm1(-dt_ms * ki * (an + bn))
            p_inf = 1.0 / (1.0 + math.exp(-(vi + 35.0) / 10.0))
            tau_p = tau_m_max[i] / (3.3 * math.exp((vi + 35.0) / 20.0) + math.exp(-(vi + 35.0) / 20.0))
            pi += (p_inf - pi) * -math.expm1(-dt_ms / tau_p)
            s_inf = 1.0 / (1.0 + math.exp(-(vi + 57.0) / 6.2))
            u_inf = 1.0 / (1.0 + math.exp((vi + 81.0) / 4.0))
            tau_u = (30.8 + (211.4 + math.exp((vi + 113.2) / 5.0)) / (1.0 + math.exp((vi + 84.0) / 3.2))) / 3.7
            ui += (u_inf - ui) * -math.expm1(-dt_ms / tau_u)
            a_inf = 1.0 / (1.0 + math.exp(-(vi + 50.0) / 20.0))
            b_inf = 1.0 / (1.0 + math.exp((vi + 70.0) / 6.0))
            ai += (a_inf - ai) * -math.expm1(-dt_ms / 2.0)
            bi += (b_inf - bi) * -math.expm1(-dt_ms / tau_d_b[i])
            i_ion = (
                g_l[i] * (vi - e_l[i])
                + g_na[i] * (mi * mi * mi) * hi * (vi - E_NA_MV)
                + (g_kd[i] * ((ni * ni) * (ni * ni)) + g_m[i] * pi + g_d[i] * (ai * ai * ai) * bi) * (vi - E_K_MV)
                + g_t[i] * (s_inf * s_inf) * ui * (vi - E_CA_MV)
            )
            during = onset_step <= step < offset_step
            i_stim = current_density[i] if during else 0.0
            if use_noise:
                qi += -qi * (dt_ms / _NOISE_TAU_MS) + noise_gain[i] * z[j, i]
                i_stim = i_stim + qi
            vi = vi + dt_ms * (i_stim - i_ion)  # C_m = 1 µF/cm²
            if during and vi > 0.0:
                spiked[i] = True
                if stop_when_spiked:
                    break  # rheobase search: this trace has answered
            if record:
                out[i, step] = vi
        v[i], m[i], h[i], n[i], pm[i], u[i], a[i], b[i], noise[i] = vi, mi, hi, ni, pi, ui, ai, bi, qi


def _integrate(
    state: _State,
    p: dict[str, np.ndarray],
    current_density: np.ndarray,
    onset_step: int,
    offset_step: int,
    n_steps: int,
    dt_ms: float,
    rng: np.random.Generator | None,
    record: bool,
    progress: bool = False,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Advance all traces ``n_steps`` steps; a step current flows during [onset, offset) (compiled).

    Same contract as :func:`integrate_numpy`, and the same noise stream: the standard-normal draws are
    taken from ``rng`` in blocks of steps (``standard_normal((k, n_traces))`` yields the values of ``k``
    successive ``standard_normal(n_traces)`` calls). Without ``record`` a trace stops once it has
    spiked during the step (the rheobase search), so its final state is then not the end of the sweep.

    Returns the recorded voltage (traces × samples, float32 mV) when ``record``, and a boolean per
    trace telling whether it crossed 0 mV during the step (a spike), used by the rheobase search.
    """
    n_tr = state.v.shape[0]
    f64 = {name: np.ascontiguousarray(p[name], dtype=np.float64) for name in
           ("v_t", "k_speed", "g_leak", "e_leak", "g_na", "g_kd", "g_m", "g_t", "g_d", "tau_m_max", "tau_d_b", "noise")}
    noise_gain = f64["noise"] * np.sqrt(2.0 * dt_ms / _NOISE_TAU_MS)
    current = np.ascontiguousarray(np.broadcast_to(np.asarray(current_density, dtype=np.float64), (n_tr,)))
    out = np.empty((n_tr, n_steps), dtype=np.float32) if record else np.empty((0, 0), dtype=np.float32)
    spiked = np.zeros(n_tr, dtype=bool)
    s = state
    gates = [np.ascontiguousarray(x, dtype=np.float64) for x in (s.v, s.m, s.h, s.n, s.p, s.u, s.a, s.b, s.noise)]
    use_noise = rng is not None
    chunk = _NOISE_CHUNK_STEPS if use_noise else n_steps
    no_draws = np.empty((0, 0), dtype=np.float64)
    bar = tqdm(total=n_steps, desc="integrating", mininterval=2.0, leave=False, disable=not progress,
               file=progress_stream())
    for step0 in range(0, n_steps, max(chunk, 1)):
        k = min(chunk, n_steps - step0)
        z = rng.standard_normal((k, n_tr)) if use_noise else no_draws
        _integrate_kernel(*gates, f64["v_t"], f64["k_speed"], f64["g_leak"], f64["e_leak"], f64["g_na"], f64["g_kd"],
                          f64["g_m"], f64["g_t"], f64["g_d"], f64["tau_m_max"], f64["tau_d_b"], noise_gain, current,
                          onset_step, offset_step, step0, k, dt_ms, z, use_noise, out, record, spiked, not record)
        bar.update(k)
    bar.close()
    s.v, s.m, s.h, s.n, s.p, s.u, s.a, s.b, s.noise = gates
    return (out if record else None), spiked


#: The integrators by name: the compiled one and the NumPy reference it was checked against.
ENGINES = ("numba", "numpy")


def integrator(engine: str):
    """The integrator function of ``engine`` (``numba`` or ``numpy``)."""
    if engine == "numba":
        return _integrate
    if engine == "numpy":
        return integrate_numpy
    raise ValueError(f"engine={engine!r} is not a simulator engine; use one of {', '.join(ENGINES)}")


def _as_arrays(params: pd.DataFrame, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    frame = params if index is None else params.iloc[index]
    return {c: frame[c].to_numpy(dtype=float) for c in PARAMETER_NAMES}


def _area_cm2(diam_um: np.ndarray) -> np.ndarray:
    d_cm = diam_um * 1e-4
    return np.pi * d_cm * d_cm  # cylinder with length = diameter (Pospischil's convention)


def resting_state(params: pd.DataFrame, settle_ms: float = 400.0, dt_ms: float = 0.02, engine: str = "numba") -> _State:
    """Noise-free state of every cell after ``settle_ms`` without current (the protocol's start)."""
    p = _as_arrays(params)
    state = _steady_gates(p["e_leak"].copy(), p)
    n_steps = int(round(settle_ms / dt_ms))
    integrator(engine)(state, p, np.zeros(len(params)), 0, 0, n_steps, dt_ms, rng=None, record=False)
    return state


def find_rheobase_pa(params: pd.DataFrame, protocol: Protocol = Protocol(), rest: _State | None = None,
                     engine: str = "numba") -> np.ndarray:
    """Smallest grid amplitude (multiple of ``protocol.grid_pa``) that makes each noise-free cell spike.

    Bisection over the grid, vectorized over cells; cells that do not spike at
    ``protocol.max_rheobase_pa`` get NaN.
    """
    rest = rest if rest is not None else resting_state(params, engine=engine)
    integrate = integrator(engine)
    p = _as_arrays(params)
    area = _area_cm2(p["diam_um"])
    dt_ms = 1000.0 / protocol.sampling_rate_hz
    n_steps = int(round(protocol.step_s * 1000.0 / dt_ms))
    lo = np.zeros(len(params))  # known not to spike
    hi = np.full(len(params), protocol.max_rheobase_pa)  # assumed to spike
    while np.any(hi - lo > protocol.grid_pa + 1e-9):
        mid = np.floor((lo + hi) / 2.0 / protocol.grid_pa) * protocol.grid_pa
        mid = np.where(mid <= lo, lo + protocol.grid_pa, mid)
        state = rest.take(np.arange(len(params)))
        _, spiked = integrate(state, p, mid * 1e-6 / area, 0, n_steps, n_steps, dt_ms, rng=None, record=False)
        hi = np.where(spiked, mid, hi)
        lo = np.where(spiked, lo, mid)
    # verify the upper end really spikes
    state = rest.take(np.arange(len(params)))
    _, spiked = integrate(state, p, hi * 1e-6 / area, 0, n_steps, n_steps, dt_ms, rng=None, record=False)
    return np.where(spiked, hi, np.nan)


def simulate_sweeps(
    params: pd.DataFrame,
    cell_index: np.ndarray,
    amplitudes_pa: np.ndarray,
    protocol: Protocol,
    rng: np.random.Generator,
    rest: _State,
    recording_noise_mv: float = 0.1,
    progress: bool = False,
    engine: str = "numba",
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one long-square sweep per (cell, amplitude) pair.

    Returns
    -------
    t_s : (n_samples,) time in s
    v_mv : (n_traces, n_samples) float32 membrane potential in mV, with recording noise
    """
    p = _as_arrays(params, cell_index)
    area = _area_cm2(p["diam_um"])
    dt_ms = 1000.0 / protocol.sampling_rate_hz
    onset = int(round(protocol.baseline_s * protocol.sampling_rate_hz))
    offset = onset + int(round(protocol.step_s * protocol.sampling_rate_hz))
    state = rest.take(cell_index)
    v, _ = integrator(engine)(state, p, np.asarray(amplitudes_pa) * 1e-6 / area, onset, offset, protocol.n_samples,
                              dt_ms, rng=rng, record=True, progress=progress)
    assert v is not None
    v += rng.normal(0.0, recording_noise_mv, size=v.shape).astype(np.float32)
    t = np.arange(protocol.n_samples) / protocol.sampling_rate_hz
    return t, v


def stimulus_trace_pa(amplitude_pa: float, protocol: Protocol) -> np.ndarray:
    """The injected current of one sweep in pA (zero, then the step, then zero)."""
    i = np.zeros(protocol.n_samples, dtype=np.float32)
    onset = int(round(protocol.baseline_s * protocol.sampling_rate_hz))
    offset = onset + int(round(protocol.step_s * protocol.sampling_rate_hz))
    i[onset:offset] = amplitude_pa
    return i


def cohort_design(n_cells_per_class: int, seed: int) -> pd.DataFrame:
    """Specimen ids, classes and parameters of the demo cohort, balanced and shuffled by ``seed``."""
    if n_cells_per_class < 1:
        raise ValueError(f"n_cells_per_class must be >= 1, got {n_cells_per_class}")
    rng = np.random.default_rng([seed, 1])
    labels = np.repeat(np.array(CLASSES, dtype=object), n_cells_per_class)
    labels = labels[rng.permutation(len(labels))]
    params = draw_cell_parameters(list(labels), rng)
    # Ids in a range no Allen specimen uses, so simulated cells can never be mistaken for real ones.
    ids = 900_000_000 + np.arange(len(labels))
    design = pd.concat([pd.DataFrame({"specimen_id": ids, "label": labels}), params], axis=1)
    return design


def simulate_cells(
    design: pd.DataFrame, seed: int, protocol: Protocol = Protocol(), progress: bool = True, engine: str = "numba"
) -> list[dict]:
    """Simulate the full protocol for the cells of ``design`` (one batch, vectorized).

    Returns one record per cell: ``specimen_id``, ``label``, ``rheobase_pa`` (noise-free model
    rheobase on the grid), ``amplitudes_pa``, ``t_s``, ``v_mv`` (sweeps × samples),
    ``i_pa`` (sweeps × samples). Cells that never spike up to ``protocol.max_rheobase_pa`` come back
    with ``rheobase_pa`` NaN and no sweeps. The noise is drawn from a generator seeded by ``seed``
    and the batch's specimen ids, so the same design and seed give identical traces. ``engine``:
    ``numba`` (compiled, the default) or ``numpy`` (the reference integrator; same equations and noise,
    traces equal to float32 rounding, about 20x slower).
    """
    params = design[list(PARAMETER_NAMES)].reset_index(drop=True)
    rest = resting_state(params, engine=engine)
    rheobase = find_rheobase_pa(params, protocol, rest, engine=engine)
    records: list[dict] = []
    cell_index, amps = [], []
    for ci, rb in enumerate(rheobase):
        if np.isnan(rb):
            continue
        for a in protocol.amplitudes_pa(rb):
            cell_index.append(ci)
            amps.append(a)
    cell_index_arr, amps_arr = np.asarray(cell_index, dtype=int), np.asarray(amps, dtype=float)
    v = np.empty((0, protocol.n_samples), dtype=np.float32)
    t = np.arange(protocol.n_samples) / protocol.sampling_rate_hz
    if len(cell_index_arr):
        # one generator per batch, seeded from the batch's specimen ids
        ids = design["specimen_id"].to_numpy()
        rng = np.random.default_rng([seed, 2, *[int(i) for i in ids]])
        t, v = simulate_sweeps(params, cell_index_arr, amps_arr, protocol, rng, rest, progress=progress, engine=engine)
    for ci, row in design.reset_index(drop=True).iterrows():
        sel = np.flatnonzero(cell_index_arr == ci)
        records.append({
            "specimen_id": int(row["specimen_id"]),
            "label": row["label"],
            "rheobase_pa": float(rheobase[ci]),
            "amplitudes_pa": amps_arr[sel],
            "t_s": t,
            "v_mv": v[sel],
            "i_pa": np.stack([stimulus_trace_pa(a, protocol) for a in amps_arr[sel]]) if len(sel) else
            np.empty((0, protocol.n_samples), dtype=np.float32),
        })
    if np.isnan(rheobase).any():
        logger.warning("%d simulated cells never spiked up to %.0f pA", int(np.isnan(rheobase).sum()),
                       protocol.max_rheobase_pa)
    return records
