//! What /proc says about a process (the host, or a PostgreSQL backend):
//! CPU time and memory, for the benches.

/// User + system CPU time of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

/// Asked once: spawning `getconf` inside a timed window would cost the
/// processes being measured.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`) in KiB; `None`
/// once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU use of some processes from now on.
pub struct CpuMeter {
    pids: Vec<u32>,
    before: Vec<f64>,
    started: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            before: pids.iter().map(|pid| cpu_seconds(*pid)).collect(),
            started: std::time::Instant::now(),
        }
    }

    /// CPU seconds each process used since `start`.
    pub fn seconds(&self) -> Vec<f64> {
        self.pids
            .iter()
            .zip(&self.before)
            .map(|(pid, before)| cpu_seconds(*pid) - before)
            .collect()
    }

    /// CPU use since `start`, in % of one core.
    pub fn percent(&self) -> Vec<f64> {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.seconds()
            .iter()
            .map(|seconds| seconds / elapsed * 100.0)
            .collect()
    }
}

/// Peak VmRSS of a process, sampled every 100 ms until dropped: VmHWM alone
/// would be the peak of the process's whole life, not of one phase.
pub struct RssSampler {
    pid: u32,
    peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let peak_kib = std::sync::Arc::new(std::sync::atomic::AtomicU64::default());
        let peak = peak_kib.clone();
        let task = tokio::spawn(async move {
            while let Some(rss) = status_kib(pid, "VmRSS") {
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        Self {
            pid,
            peak_kib,
            task,
        }
    }

    /// Peak sampled VmRSS so far, in MiB.
    pub fn peak_mib(&self) -> f64 {
        // The sampler may not have run yet in a short phase.
        let now = status_kib(self.pid, "VmRSS").unwrap_or_default();
        let peak = self.peak_kib.load(std::sync::atomic::Ordering::Relaxed);
        peak.max(now) as f64 / 1024.0
    }

    /// "peak sampled VmRSS / VmHWM" in MiB; call while the process lives.
    pub fn report(&self) -> String {
        let hwm = status_kib(self.pid, "VmHWM").unwrap_or_default();
        format!(
            "{:.0} MiB / {:.0} MiB",
            self.peak_mib(),
            hwm as f64 / 1024.0
        )
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// "2 cores (CPU model)", for a bench's header.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores ({model})")
}
