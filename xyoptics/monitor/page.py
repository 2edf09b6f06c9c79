"""The monitor page of one run: one Bokeh document per browser tab, refreshed from the run folder every second.

Every tab reads the metrics appended since its last look (``runfolder.MetricsTail``) and streams them into
its plots, so a tab opened late on a finished run replays the whole of it. The header gives the state, step,
epoch, step rate and ETA; the side panel the laser and shutter as read back (or as parked), the calibration
in use and the rig. The stop button sends the token typed next to it to ``control.RunControl.stop``.
"""

from __future__ import annotations

import html
import time
from collections import deque

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import Button, ColumnDataSource, Div, PasswordInput

from ..core.machine import FLAGS
from . import figures
from .control import RunControl
from .runfolder import MetricsTail, RunFolder

REFRESH_MS = 1000
STEP_FIELDS = ("step", "cost", "reference_phase_rad", "modulation_ratio", "wall_s")
EVAL_FIELDS = ("epoch", "step", *figures.SPLITS)
RATE_WINDOW = 50  # steps over which the step rate is measured


def _column(records: list[dict], key: str) -> np.ndarray:
    """One field of every record as floats, NaN where a record lacks it or holds None."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in records], dtype=float)


def _count(record: dict, name: str) -> int:
    if name == "flagged":
        return sum(int(record.get(flag, 0)) for flag in FLAGS)
    return int(record.get(name) or 0)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _empty(fields) -> dict:
    return {name: np.array([], dtype=float) for name in fields}


class MonitorPage:
    """The document's plots and widgets, and the ``update`` that refreshes them from the run folder."""

    def __init__(self, doc, folder: RunFolder, control: RunControl):
        self.doc, self.folder, self.control = doc, folder, control
        self.tail = MetricsTail(folder.path / "metrics.jsonl")
        self.steps = ColumnDataSource(_empty(self._step_columns()), name="steps")
        self.evals = ColumnDataSource(_empty(EVAL_FIELDS), name="learning_curve")
        self.frame = ColumnDataSource({"image": [], "dw": [], "dh": []})
        self.spots = ColumnDataSource({"x": [], "y": [], "phase": [], "spot": []})
        self.bonds = ColumnDataSource({k: [] for k in ("x0", "y0", "x1", "y1", "w", "width")})
        self.sites = ColumnDataSource({k: [] for k in ("x", "y", "angle", "kind", "marker", "tip_x", "tip_y",
                                                       "spin")})
        self.mapper = figures.coupling_mapper()
        self.camera = figures.camera(self.frame, self.spots)
        self.spin_map = figures.spin_map(self.bonds, self.sites)
        self.coupling_map = figures.coupling_map(self.bonds, self.sites, self.mapper)
        self.header = Div(name="header", width=3 * figures.WIDTH)
        self.info = Div(name="info", width=figures.WIDTH)
        self.token = PasswordInput(placeholder="token", title="token (printed where the monitor started)",
                                   width=260)
        self.stop_button = Button(label="Stop safely", button_type="danger", width=140, disabled=True)
        self.stop_button.on_click(self.on_stop)
        self.message = Div(name="stop_message", width=figures.WIDTH)
        stop_panel = column(Div(text="<b>Stop the run</b>: as Ctrl-C does, at the next step boundary, with a "
                                     "checkpoint and the hardware parked."), self.token, self.stop_button,
                            self.message, width=figures.WIDTH)
        doc.add_root(column(
            self.header,
            row(figures.learning_curves(self.evals), figures.cost_per_step(self.steps), figures.counts(self.steps)),
            row(self.camera, self.spin_map, self.coupling_map),
            row(figures.drift(self.steps), self.info, stop_panel)))
        doc.title = f"xyoptics monitor: {folder.name}"
        self._reset()
        self._snapshot_seen: float | None = None
        self._params_seen: float | None = None
        self._geometry_drawn = False
        self.update()
        doc.add_periodic_callback(self.update, REFRESH_MS)

    @staticmethod
    def _step_columns() -> tuple[str, ...]:
        return (*STEP_FIELDS, *(f"total_{name}" for name in figures.COUNTS))

    def _reset(self) -> None:
        self.totals = dict.fromkeys(figures.COUNTS, 0)
        self.last_step: dict | None = None
        self.best: dict | None = None
        self.recent = deque(maxlen=RATE_WINDOW)  # (step, wall_s)
        self.steps.data = _empty(self._step_columns())
        self.evals.data = _empty(EVAL_FIELDS)

    # -- refreshing -------------------------------------------------------------------------------------------
    def update(self) -> None:
        restarted, records = self.tail.read()
        if restarted:
            self._reset()
        self._add_steps([r for r in records if r.get("kind") == "step"])
        self._add_evals([r for r in records if r.get("kind") == "eval"])
        state = self.folder.state()
        self._draw_live(state)
        self.header.text = self._header(state)
        self.info.text = self._info(state)
        self.stop_button.disabled = not state.running

    def _add_steps(self, steps: list[dict]) -> None:
        if not steps:
            return
        new = {name: _column(steps, name) for name in STEP_FIELDS}
        for name in figures.COUNTS:
            per_step = np.array([_count(r, name) for r in steps])
            new[f"total_{name}"] = self.totals[name] + np.cumsum(per_step)
            self.totals[name] = int(new[f"total_{name}"][-1])
        self.steps.stream(new)
        self.recent.extend((r["step"], r["wall_s"]) for r in steps if r.get("wall_s") is not None)
        self.last_step = steps[-1]

    def _add_evals(self, evals: list[dict]) -> None:
        if not evals:
            return
        self.evals.stream({"epoch": _column(evals, "epoch"), "step": _column(evals, "step"),
                           **{split: _column(evals, f"{split}_accuracy") for split in figures.SPLITS}})
        for record in evals:
            if self.best is None or (record.get("selection_accuracy") or 0) > self.best["selection_accuracy"]:
                self.best = {"epoch": record["epoch"], "selection_accuracy": record.get("selection_accuracy") or 0}

    def _draw_live(self, state) -> None:
        """The network's geometry once it is known; the trainer's latest snapshot whenever it changes; and once
        the run has ended, its final couplings (``params.h5``)."""
        net = self.folder.network()
        geometry = net is not None and net.positions is not None
        if geometry and not self._geometry_drawn:
            self.bonds.data = figures.bond_columns(net)
            self.sites.data = figures.site_columns(net, None)
            self._geometry_drawn = True
        mtime = self.folder.snapshot_mtime()
        if mtime is not None and mtime != self._snapshot_seen:
            self._snapshot_seen = mtime
            if (snap := self.folder.live_snapshot()) is not None:
                step = int(snap["step"])
                if geometry:
                    self.sites.data = figures.site_columns(net, snap["spin_angles"])
                    self.spin_map.title.text = f"spin angles at step {step} (free, first sample of the batch)"
                    self._draw_couplings(snap["couplings"], f"couplings W per bond at step {step}")
                if "frame" in snap:
                    self._draw_frame(snap)
        params = self.folder.params_mtime()
        if geometry and not state.running and params is not None and params != self._params_seen:
            self._params_seen = params
            if (final := self.folder.final_couplings()) is not None:
                self._draw_couplings(final, "couplings W per bond at the end of the run")

    def _draw_couplings(self, w: np.ndarray, title: str) -> None:
        if len(w) != len(self.bonds.data["x0"]):
            return  # a snapshot of another network (the folder was reused)
        self.coupling_map.title.text = title
        scale = float(np.max(np.abs(w))) if len(w) and np.max(np.abs(w)) > 0 else 1.0
        self.mapper.low, self.mapper.high = -scale, scale
        self.bonds.data = {**self.bonds.data, "w": w, "width": 1.0 + 5.0 * np.abs(w) / scale}

    def _draw_frame(self, snap: dict) -> None:
        rows, cols = (int(n) for n in snap["camera_shape"])
        self.frame.data = {"image": [snap["frame"]], "dw": [cols], "dh": [rows]}
        centres = snap["spot_centres"]
        self.spots.data = {"x": centres[:, 1], "y": centres[:, 0], "phase": snap["spot_phases"],
                           "spot": np.arange(len(centres))}
        self.camera.x_range.update(start=0, end=cols)
        self.camera.y_range.update(start=rows, end=0)
        binning = int(snap["frame_bin"])
        self.camera.title.text = (f"camera frame at step {int(snap['step'])}"
                                  + (f" (shown binned {binning}x{binning})" if binning > 1 else ""))

    # -- text -----------------------------------------------------------------------------------------------------
    def _header(self, state) -> str:
        live = self.folder.live_status() or {}
        parts = [f"<b>{html.escape(self.folder.name)}</b>", f"<b>{html.escape(state.text)}</b>"]
        step = self.last_step["step"] if self.last_step else 0
        total = live.get("steps_total")
        parts.append(f"step {step}" + (f" / {total}" if total else ""))
        if self.last_step:
            parts.append(f"epoch {self.last_step['epoch']}" + (f" / {live['epochs']}" if live.get("epochs") else ""))
        rate = self._rate()
        if rate:
            parts.append(f"{rate:.2f} steps/s")
            if state.running and total:
                parts.append(f"ETA {_duration(max(total - step, 0) / rate)}")
        if state.running and (age := self.folder.seconds_since_metrics(time.time())) is not None:
            parts.append(f"last record {_duration(age)} ago")
        totals = " · ".join(f"{name} {n}" for name, n in self.totals.items())
        best = (f" · best selection accuracy {self.best['selection_accuracy']:.2f} (epoch {self.best['epoch']})"
                if self.best else "")
        return (f"<div style='font-size:14px'>{' · '.join(parts)}</div>"
                f"<div style='font-size:12px;color:#555'>measurements not clean, in total: {totals}{best}</div>")

    def _rate(self) -> float | None:
        if len(self.recent) < 2:
            return None
        (s0, t0), (s1, t1) = self.recent[0], self.recent[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def _info(self, state) -> str:
        return "".join([self._instruments(state), self._calibration(), self._rig()])

    def _instruments(self, state) -> str:
        summary = self.folder.summary() or {}
        if not state.running and summary.get("hardware_parked"):
            parked = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary["hardware_parked"].items())
            return f"<b>Instruments</b>: parked ({html.escape(parked)})<br>"
        found = (self.folder.live_status() or {}).get("instruments")
        if not found:
            return "<b>Instruments</b>: none reported yet<br>"
        if "error" in found:
            return f"<b>Instruments</b>: read-back failed: {html.escape(found['error'])}<br>"
        lines = []
        if "laser" in found:
            laser = found["laser"]
            lines.append(f"laser {html.escape(str(laser['resource']))}: {laser['power_mw']} mW "
                         f"(limit {laser['max_power_mw']} mW), output {'on' if laser['output_on'] else 'OFF'}")
        if "shutter" in found:
            lines.append(f"shutter: {'open' if found['shutter']['open'] else 'CLOSED'}")
        return "<b>Instruments</b> (read back): " + "; ".join(lines) + "<br>"

    def _calibration(self) -> str:
        session = self.folder.session() or {}
        if session.get("machine", "digital") == "digital":
            return "<b>Calibration</b>: none (digital machine)<br>"
        record = self.folder.calibration()
        if not record or not record.get("files"):
            return "<b>Calibration</b>: none (uncalibrated rig)<br>"
        files = "".join(f"<li>{html.escape(f['kind'])}: {html.escape(f['path'].rsplit('/', 1)[-1])} "
                        f"({html.escape(str(f.get('created', ''))[:16])})</li>" for f in record["files"])
        left_out = "".join(f"<li>{html.escape(k)} left out: {html.escape(str(v))}</li>"
                           for k, v in (record.get("left_out") or {}).items())
        folder = html.escape(str(session.get("calibration") or ""))
        return f"<b>Calibration</b> in use ({folder}):<ul style='margin:2px'>{files}{left_out}</ul>"

    def _rig(self) -> str:
        rig = self.folder.rig_snapshot()
        if not rig:
            return ""
        cam, slm = rig["camera"], rig["slm"]
        return (f"<b>Rig</b> {html.escape(rig['rig'])}: camera {cam['resolution'][0]}×{cam['resolution'][1]}, "
                f"{cam['bitdepth']} bit, exposure {1e3 * cam['exposure_s']:.3g} ms; SLM {slm['resolution'][0]}×"
                f"{slm['resolution'][1]}, {slm['bitdepth']} bit; settle {1e3 * rig['settle_time_s']:.3g} ms")

    # -- the stop button ----------------------------------------------------------------------------------------
    def on_stop(self) -> None:
        answer = self.control.stop(self.token.value_input or self.token.value, by="the monitor page")
        colour = "#2a7d2a" if answer.ok else "#b00020"
        self.message.text = f"<span style='color:{colour}'>{html.escape(answer.message)}</span>"
