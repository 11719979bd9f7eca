//! Temperatures from `/sys/class/hwmon` (or, where a host has no hwmon, thermal zones).
//!
//! Read directly rather than through sysinfo's Components: discovery (directory listings,
//! names, labels) happens once every few minutes, and a tick reads only the `*_input`
//! files it already knows. A host without sensors (most VMs) simply yields no samples.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One temperature input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sensor {
    /// The hwmon chip (`coretemp`, `nvme`, `k10temp`), made unique when two share a name.
    pub chip: String,
    /// Its label (`Core 0`, `Composite`) or, without one, the input's name (`temp1`).
    pub sensor: String,
    pub input: PathBuf,
}

/// Find the temperature inputs under `sys_class` (normally `/sys/class`).
pub fn discover(sys_class: &Path) -> Vec<Sensor> {
    let mut found = discover_hwmon(&sys_class.join("hwmon"));
    if found.is_empty() {
        // Thermal zones usually also appear as hwmon chips; only some hosts (ARM boards,
        // a few VMs) have them alone.
        found = discover_thermal(&sys_class.join("thermal"));
    }
    make_unique(&mut found);
    found
}

fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    // Natural order, so that temp2 comes before temp10 and hwmon2 before hwmon10.
    v.sort_by(|a, b| natural_key(&a.0).cmp(&natural_key(&b.0)));
    v
}

/// `temp10_input` -> ("temp", 10, "_input"): the first run of digits compares as a number.
fn natural_key(s: &str) -> (&str, u64, &str) {
    let start = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
    let (head, rest) = s.split_at(start);
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (num, tail) = rest.split_at(end);
    (head, num.parse().unwrap_or(0), tail)
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn discover_hwmon(dir: &Path) -> Vec<Sensor> {
    let mut out = Vec::new();
    for (hw_name, hw) in sorted_entries(dir) {
        let chip = read_trimmed(&hw.join("name")).unwrap_or(hw_name);
        // What the chip is attached to (coretemp.0, nvme0): tells apart chips of one name.
        let device = fs::read_link(hw.join("device"))
            .ok()
            .and_then(|p| p.file_name()?.to_str().map(str::to_string));
        for (file, path) in sorted_entries(&hw) {
            let Some(stem) = file
                .strip_suffix("_input")
                .filter(|s| s.starts_with("temp"))
            else {
                continue;
            };
            let sensor =
                read_trimmed(&hw.join(format!("{stem}_label"))).unwrap_or_else(|| stem.to_string());
            out.push((
                device.clone(),
                Sensor {
                    chip: chip.clone(),
                    sensor,
                    input: path,
                },
            ));
        }
    }
    // Two chips of one name (two sockets' coretemp, two NVMe drives): qualify with the
    // device they belong to.
    let mut devices_per_chip: HashMap<String, Vec<Option<String>>> = HashMap::new();
    for (dev, s) in &out {
        let v = devices_per_chip.entry(s.chip.clone()).or_default();
        if !v.contains(dev) {
            v.push(dev.clone());
        }
    }
    out.into_iter()
        .map(|(dev, mut s)| {
            if devices_per_chip[&s.chip].len() > 1
                && let Some(d) = dev
            {
                s.chip = format!("{}/{}", s.chip, d);
            }
            s
        })
        .collect()
}

fn discover_thermal(dir: &Path) -> Vec<Sensor> {
    sorted_entries(dir)
        .into_iter()
        .filter(|(name, _)| name.starts_with("thermal_zone"))
        .map(|(name, zone)| Sensor {
            chip: "thermal".to_string(),
            sensor: read_trimmed(&zone.join("type")).unwrap_or(name),
            input: zone.join("temp"),
        })
        .collect()
}

/// Whatever discovery found, no two sensors may share (chip, sensor): they would be one
/// series on the collector.
fn make_unique(sensors: &mut [Sensor]) {
    let mut seen: HashMap<(String, String), u32> = HashMap::new();
    for s in sensors.iter_mut() {
        let n = seen.entry((s.chip.clone(), s.sensor.clone())).or_insert(0);
        *n += 1;
        if *n > 1 {
            s.sensor = format!("{} #{}", s.sensor, n);
        }
    }
}

/// A `temp*_input` value: millidegrees Celsius.
pub fn parse_millidegrees(text: &str) -> Option<f64> {
    let v: i64 = text.trim().parse().ok()?;
    Some(v as f64 / 1000.0)
}

/// Read one input into `buf` (reused between ticks) and convert it. Sensors that are
/// unplugged or asleep answer with an error (ENODATA, EAGAIN): no value this time.
pub fn read_celsius(input: &Path, buf: &mut String) -> Option<f64> {
    buf.clear();
    fs::File::open(input).ok()?.read_to_string(buf).ok()?;
    parse_millidegrees(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn millidegrees() {
        assert_eq!(parse_millidegrees("45000\n"), Some(45.0));
        assert_eq!(parse_millidegrees("-5500"), Some(-5.5));
        assert_eq!(parse_millidegrees(""), None);
    }

    #[test]
    fn hwmon_chips_labels_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Two coretemp chips (two sockets), one with labels; an nvme chip without labels;
        // a chip with only fan and voltage inputs.
        for (hw, dev) in [("hwmon1", "coretemp.0"), ("hwmon10", "coretemp.1")] {
            write(root, &format!("hwmon/{hw}/name"), "coretemp\n");
            write(root, &format!("hwmon/{hw}/temp1_input"), "45000\n");
            write(root, &format!("hwmon/{hw}/temp1_label"), "Package id 0\n");
            write(root, &format!("hwmon/{hw}/temp2_input"), "43000\n");
            write(root, &format!("hwmon/{hw}/temp2_label"), "Core 0\n");
            let target = root.join("devices").join(dev);
            fs::create_dir_all(&target).unwrap();
            std::os::unix::fs::symlink(&target, root.join(format!("hwmon/{hw}/device"))).unwrap();
        }
        write(root, "hwmon/hwmon2/name", "nvme\n");
        write(root, "hwmon/hwmon2/temp1_input", "38850\n");
        write(root, "hwmon/hwmon2/temp10_input", "40850\n");
        write(root, "hwmon/hwmon2/temp2_input", "39850\n");
        write(root, "hwmon/hwmon2/temp1_max", "84850\n");
        write(root, "hwmon/hwmon3/name", "nct6775\n");
        write(root, "hwmon/hwmon3/fan1_input", "1200\n");
        write(root, "hwmon/hwmon3/in0_input", "1000\n");
        // Ignored while hwmon has sensors.
        write(root, "thermal/thermal_zone0/type", "acpitz\n");
        write(root, "thermal/thermal_zone0/temp", "27800\n");

        let found = discover(root);
        let ids: Vec<(&str, &str)> = found
            .iter()
            .map(|s| (s.chip.as_str(), s.sensor.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("coretemp/coretemp.0", "Package id 0"),
                ("coretemp/coretemp.0", "Core 0"),
                ("nvme", "temp1"),
                ("nvme", "temp2"),
                ("nvme", "temp10"),
                ("coretemp/coretemp.1", "Package id 0"),
                ("coretemp/coretemp.1", "Core 0"),
            ]
        );
        let mut buf = String::new();
        assert_eq!(read_celsius(&found[2].input, &mut buf), Some(38.85));
        assert_eq!(read_celsius(&root.join("hwmon/none"), &mut buf), None);
    }

    #[test]
    fn thermal_zones_when_no_hwmon() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "thermal/thermal_zone0/type", "cpu-thermal\n");
        write(root, "thermal/thermal_zone0/temp", "51540\n");
        write(root, "thermal/thermal_zone1/type", "cpu-thermal\n");
        write(root, "thermal/thermal_zone1/temp", "50000\n");
        write(root, "thermal/cooling_device0/type", "Processor\n");
        let found = discover(root);
        let ids: Vec<(&str, &str)> = found
            .iter()
            .map(|s| (s.chip.as_str(), s.sensor.as_str()))
            .collect();
        assert_eq!(
            ids,
            [("thermal", "cpu-thermal"), ("thermal", "cpu-thermal #2")]
        );
    }

    #[test]
    fn no_sensors_no_samples() {
        let dir = tempfile::tempdir().unwrap();
        assert!(discover(dir.path()).is_empty());
    }
}
