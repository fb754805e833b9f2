"""Helpers of scripts/soak: write the manifest, sample the host, report.

Standard library only, so the soak runs wherever python3 does.
"""

import csv
import os
import socket
import sqlite3
import sys
import time

SAMPLE_EVERY_S = 10
WARM_UP_S = 60
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_ports(count):
    """`count` distinct free ports: every socket stays bound until all are
    chosen, so the OS cannot hand out one port twice."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def manifest(out, devices):
    broker_port, *device_ports = free_ports(1 + int(devices))
    lines = [
        "[site]",
        'name = "soak"',
        'enterprise = "acme"',
        f'data_dir = "{os.path.abspath(out)}"',
        "[plugins]",
        f'dir = "{os.path.abspath("target/plugins")}"',
        "[broker]",
        f'listen = "127.0.0.1:{broker_port}"',
        "anonymous = true",
        "[broker.uns]",
        "[sinks.storage]",
        'plugin = "timescale"',
        'url = "sqlite:soak.db"',
        'topics = ["/neuron/omh/#"]',
        "[sinks.storage.settings]",
        'template = "INSERT INTO conditions(time, temperature, humidity) '
        'VALUES (${timestamp}, ${temperature}, ${humidity})"',
    ]
    for n, port in enumerate(device_ports):
        lines += [
            f"[simulators.sim{n}]",
            f'listen = "127.0.0.1:{port}"',
            'update_interval = "1s"',
            'registers = [{ address = "1!40001", min = 280, max = 309 }, '
            '{ address = "1!40002", min = 700, max = 729 }]',
            f"[devices.d{n}]",
            'driver = "modbus-tcp"',
            f'endpoint = "127.0.0.1:{port}"',
            f'area = "hall{n // 10}"',
            f"[devices.d{n}.groups.g]",
            'interval = "1s"',
            'tags = [{ name = "temperature", address = "1!40001", type = "int16" }, '
            '{ name = "humidity", address = "1!40002", type = "int16" }]',
        ]
    with open(os.path.join(out, "site.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB / 1024


def rows(out):
    try:
        with sqlite3.connect(os.path.join(out, "soak.db")) as db:
            return db.execute("SELECT count(*) FROM conditions").fetchone()[0]
    except sqlite3.Error:
        return 0


def sample(out, pid, minutes):
    pid = int(pid)
    end = time.monotonic() + float(minutes) * 60
    start = time.monotonic()
    last_cpu, last_t = cpu_seconds(pid), start
    with open(os.path.join(out, "soak.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["elapsed_s", "rss_mib", "cpu_percent", "rows"])
        while time.monotonic() < end:
            time.sleep(SAMPLE_EVERY_S)
            if not os.path.exists(f"/proc/{pid}"):
                sys.exit(f"soak: omh-host exited early; see {out}/omh-host.log")
            now, cpu = time.monotonic(), cpu_seconds(pid)
            percent = 100 * (cpu - last_cpu) / (now - last_t)
            last_cpu, last_t = cpu, now
            row = [round(now - start), round(rss_mib(pid), 1), round(percent, 1), rows(out)]
            writer.writerow(row)
            f.flush()
            print("soak: t=%ss rss=%s MiB cpu=%s%% rows=%s" % tuple(row), flush=True)


def polyline(points, width, height, x_max, y_max, colour):
    coords = " ".join(
        f"{40 + x / x_max * (width - 60):.1f},{height - 30 - y / y_max * (height - 50):.1f}"
        for x, y in points
    )
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>'


def slope(points):
    """Least-squares slope of (x, y) points; 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


def report(out):
    with open(os.path.join(out, "soak.csv")) as f:
        samples = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    if not samples:
        sys.exit("soak: no samples")
    settled = [s for s in samples if s["elapsed_s"] >= WARM_UP_S] or samples
    first, last = settled[0], settled[-1]
    peak = max(s["rss_mib"] for s in samples)
    mean_cpu = sum(s["cpu_percent"] for s in samples) / len(samples)
    minutes = (last["elapsed_s"] - first["elapsed_s"]) / 60 or 1
    growth = (last["rss_mib"] - first["rss_mib"]) / minutes
    # The broker's in-memory log fills for the first minutes of a run; what
    # says "no growth" is the trend once it is full: the second half's.
    second_half = [s for s in samples if s["elapsed_s"] >= samples[-1]["elapsed_s"] / 2]
    late_trend = slope([(s["elapsed_s"] / 60, s["rss_mib"]) for s in second_half])
    width, height = 800, 300
    x_max = samples[-1]["elapsed_s"] or 1
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        polyline([(s["elapsed_s"], s["rss_mib"]) for s in samples], width, height, x_max, peak * 1.2, "#1f77b4"),
        polyline([(s["elapsed_s"], s["cpu_percent"]) for s in samples], width, height, x_max, 200, "#d62728"),
        f'<text x="40" y="15" fill="#1f77b4">RSS MiB (0-{peak * 1.2:.0f})</text>',
        f'<text x="250" y="15" fill="#d62728">CPU % of one core (0-200)</text>',
        f'<text x="{width - 200}" y="{height - 8}">time: 0-{x_max / 60:.0f} min</text>',
        "</svg>",
    ]
    with open(os.path.join(out, "soak.svg"), "w") as f:
        f.write("\n".join(svg))
    print(
        f"soak: {len(samples)} samples over {x_max / 60:.1f} min; RSS after warm-up "
        f"{first['rss_mib']:.1f} -> {last['rss_mib']:.1f} MiB ({growth:+.2f} MiB/min), "
        f"second half {min(s['rss_mib'] for s in second_half):.1f}-"
        f"{max(s['rss_mib'] for s in second_half):.1f} MiB (trend {late_trend:+.3f} MiB/min), "
        f"peak {peak:.1f} MiB; CPU mean {mean_cpu:.1f}% of one core; "
        f"{int(last['rows'])} rows stored; plot {out}/soak.svg"
    )


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"manifest": manifest, "sample": sample, "report": report}[command](*args)
