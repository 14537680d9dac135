"""The README's main command: `streamer demo` runs broker, traffic and worker, shows results, stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time


def test_demo_runs_scores_alerts_and_stops_cleanly_on_ctrl_c():
    env = {**os.environ, "COLUMNS": "160"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "demo", "--port", "0", "--rate", "800", "--sensor-rate", "50", "--fraud-rate", "0.03", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 120
    scored = 0
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"scored ([\d,]+)", line)
            if m:
                scored = int(m.group(1).replace(",", ""))
            if scored >= 3000 and any(" alerts " in x and not re.search(r"alerts 0 ", x) for x in lines[-3:]):
                break
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + out
    assert proc.returncode == 0, text[-2000:]
    final = re.search(r"demo stopped: ([\d,]+) events in, ([\d,]+) scored, ([\d,]+) alerts", text)
    assert final, text[-2000:]
    n_in, n_scored, n_alerts = (int(g.replace(",", "")) for g in final.groups())
    assert n_scored >= 3000 and n_alerts > 0 and n_scored <= n_in
    assert "p99" in text and "ms" in text
