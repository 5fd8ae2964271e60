"""A signal control written as a Mesa agent (twins.traffic.signals), for the README's example:

    cd examples && python -m twins run scenario=junction scenario.signal_control=my_control:LongestQueueFirst

It runs after the scenario's programs each step and may replace any link's code (``self.model.signal_state``
holds what the programs show). Here, for a scenario with one signal program (``scenario=junction``): the
green phase whose links have the most halted vehicles queued takes over (ties: the lower phase), at most once
every ``hold_s`` seconds, its predecessor's greens showing yellow (every other link red) for ``yellow_s``
seconds first. It reads only the state and the time, so arms stay paired and a world's numbers do not depend
on its batch.
"""
from __future__ import annotations

import torch

from twins.traffic import control
from twins.traffic.kernels import SIG_GREEN, SIG_GREEN_MINOR, SIG_RED, SIG_YELLOW
from twins.traffic.signals import SignalControl


class LongestQueueFirst(SignalControl):
    hold_s = 10.0  # a phase keeps its green at least this long
    yellow_s = 3.0

    def __init__(self, model):
        super().__init__(model)
        net = model.net
        code = net.phase_code[0]  # [phases, links]: the phase states of the one program
        green = (code == SIG_GREEN) | (code == SIG_GREEN_MINOR)
        self.greens = torch.nonzero(green.any(1)).flatten()  # the program's phases with a green
        self.green_links = green[self.greens].to(torch.float64)  # [green phases, links]
        # the incoming lane of each link (the queue it serves; none for a link without one)
        lane = control.program_tables(net).link_in_lane
        self.link_lane, self.has_lane = lane.clamp(min=0), (lane >= 0).to(torch.float64)
        self.current = self.previous = None  # [W] index into self.greens: shown now, shown before the switch
        self.switched = None  # [W] time of the last switch (-inf: none yet)

    def codes(self, t: float) -> torch.Tensor:
        m = self.model
        shown = m.signal_state  # the programs' codes this step: [W, links]
        if not len(self.greens) or shown.shape[1] == 0:
            return shown
        W = shown.shape[0]
        per_link = m.lane_queues(halted_only=True)[:, self.link_lane] * self.has_lane  # [W, links]
        best = (per_link @ self.green_links.T).argmax(1)  # the green phase serving the longest queue
        if self.current is None or m.step_index == 0:
            self.current, self.previous = best.clone(), best.clone()
            self.switched = torch.full((W,), -torch.inf, dtype=torch.float64, device=shown.device)
        switch = (t - self.switched >= self.hold_s) & (best != self.current)
        self.previous = torch.where(switch, self.current, self.previous)
        self.current = torch.where(switch, best, self.current)
        self.switched = torch.where(switch, torch.full_like(self.switched, t), self.switched)
        code = m.net.phase_code[0]
        out = code[self.greens[self.current]].to(shown.dtype)  # [W, links]
        # the first yellow_s seconds after a switch: the old phase's greens show yellow, every other link red
        old_green = self.green_links[self.previous] > 0
        yellow = torch.where(old_green, torch.full_like(out, SIG_YELLOW), torch.full_like(out, SIG_RED))
        return torch.where((t - self.switched < self.yellow_s).unsqueeze(1), yellow, out)
