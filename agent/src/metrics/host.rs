//! Facts about the host, gathered once per connection. sysinfo is used here because it
//! knows where each distribution keeps its name and how to name ARM CPUs; nothing on the
//! per-tick path goes through it.

use aftercare_shared::model::{HostFacts, UnixMillis};
use sysinfo::{CpuRefreshKind, RefreshKind, System};

/// `aftercare-agent 0.1.0 (x86_64-linux, release)`.
pub fn agent_build() -> String {
    format!(
        "aftercare-agent {} ({}-{}, {})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// `memory_bytes` and `boot_time` come from the collector's own `/proc` readings.
pub fn gather(memory_bytes: u64, boot_time: UnixMillis) -> HostFacts {
    // The CPU list without usage or frequency: one read of /proc/stat and /proc/cpuinfo.
    let sys =
        System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing())).ok();
    let cpus = sys.as_ref().map(|s| s.cpus()).unwrap_or_default();
    let cpu_model = cpus
        .iter()
        .map(|c| c.brand().trim())
        .find(|b| !b.is_empty())
        .unwrap_or_default()
        .to_string();
    let cpu_count = if cpus.is_empty() {
        std::thread::available_parallelism().map_or(0, |n| n.get())
    } else {
        cpus.len()
    };
    HostFacts {
        hostname: System::host_name().unwrap_or_default(),
        os_name: System::name().unwrap_or_default(),
        os_version: System::os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        cpu_model,
        cpu_count: u32::try_from(cpu_count).unwrap_or(u32::MAX),
        memory_bytes,
        boot_time,
        agent_build: agent_build(),
    }
}
