"""A signal control written as a Mesa agent (twins.traffic.signals), for the README's example:

    cd examples && python -m twins run scenario=junction scenario.signal_control=my_control:LongestQueueFirst

It runs after the scenario's programs each step and may replace any link's code (``self.model.signal_state``
holds what the programs show). Here, for a scenario with one signal program (``scenario=junction``): after
at least ``hold_s`` seconds of green, the green phase whose links have the most halted vehicles queued takes
over (ties: the lower phase), its predecessor's greens showing yellow for ``yellow_s`` seconds first. It
reads only the state and the time, so arms stay paired and a world's numbers do not depend on its batch.
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
        code = net.phase_code  # [P, K, links]: each program's phase states
        self.greens = [k for k in range(code.shape[1]) if bool(((code[0, k] == SIG_GREEN)
                                                                | (code[0, k] == SIG_GREEN_MINOR)).any())]
        # the incoming lane of each link, to count the queue a phase would serve
        self.link_lane = control.program_tables(net).link_in_lane.clamp(min=0)
        self.current = None  # [W] index into self.greens
        self.since = None  # [W] time the current green started

    def codes(self, t: float) -> torch.Tensor:
        m = self.model
        shown = m.signal_state  # the programs' codes this step: [W, links]
        if not self.greens or shown.shape[1] == 0:
            return shown
        W = shown.shape[0]
        queues = m.lane_queues(halted_only=True)  # [W, lanes]
        per_link = queues[:, self.link_lane]  # [W, links]
        code = m.net.phase_code[0]  # one program here (scenario=junction)
        serve = torch.stack([(per_link * ((code[k] == SIG_GREEN) | (code[k] == SIG_GREEN_MINOR))).sum(1)
                             for k in self.greens], 1)  # [W, green phases]
        best = serve.argmax(1)
        if self.current is None or m.step_index == 0:
            self.current = best.clone()
            self.since = torch.full((W,), t, dtype=torch.float64, device=shown.device)
        switch = (t - self.since >= self.hold_s) & (best != self.current)
        self.since = torch.where(switch, torch.full_like(self.since, t), self.since)
        previous = self.current
        self.current = torch.where(switch, best, self.current)
        phase = torch.tensor(self.greens, device=shown.device)[self.current]
        out = code[phase].to(shown.dtype)  # [W, links]
        # the first yellow_s seconds after a switch: the old phase's greens show yellow, the new ones red
        in_yellow = (t - self.since < self.yellow_s) & (self.since > 0)
        old = code[torch.tensor(self.greens, device=shown.device)[previous]]
        was_green = (old == SIG_GREEN) | (old == SIG_GREEN_MINOR)
        yellow = torch.where(was_green, torch.full_like(out, SIG_YELLOW), torch.full_like(out, SIG_RED))
        return torch.where(in_yellow.unsqueeze(1), yellow, out)
