//! This process's own vDSO, read in-process (for tests): its base from `/proc/self/auxv`, its
//! size from `/proc/self/maps`, its bytes through `/proc/self/mem`.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;

use super::VdsoImage;
use super::elf::read_u64;
use crate::arch::{Arch, Native};

/// `AT_SYSINFO_EHDR` in the auxiliary vector: the address of the vDSO's ELF header.
const AT_SYSINFO_EHDR: u64 = 33;

impl VdsoImage {
    /// The vDSO of the calling process: base from the auxiliary vector (`AT_SYSINFO_EHDR`), size
    /// from the `[vdso]` line of `/proc/self/maps`, bytes copied through `/proc/self/mem`.
    pub fn of_current_process() -> Result<VdsoImage, String> {
        let base = auxv_sysinfo_ehdr()?;
        let (start, end) = vdso_mapping()?;
        if start != base {
            return Err(format!(
                "AT_SYSINFO_EHDR is {base:#x} but /proc/self/maps shows [vdso] at {start:#x}"
            ));
        }
        let len = usize::try_from(end - start)
            .map_err(|_| format!("[vdso] mapping {start:#x}-{end:#x} is implausibly large"))?;
        let mut bytes = vec![0u8; len];
        let mem = std::fs::File::open("/proc/self/mem")
            .map_err(|e| format!("cannot open /proc/self/mem: {e}"))?;
        mem.read_exact_at(&mut bytes, base)
            .map_err(|e| format!("cannot read the vDSO at {base:#x} from /proc/self/mem: {e}"))?;
        VdsoImage::parse(base, bytes, Native::MACHINE)
    }
}

/// `AT_SYSINFO_EHDR` of this process, from `/proc/self/auxv` (same value as `getauxval`).
fn auxv_sysinfo_ehdr() -> Result<u64, String> {
    let mut auxv = Vec::new();
    std::fs::File::open("/proc/self/auxv")
        .and_then(|mut f| f.read_to_end(&mut auxv))
        .map_err(|e| format!("cannot read /proc/self/auxv: {e}"))?;
    auxv.chunks_exact(16)
        .map(|pair| (read_u64(pair, 0), read_u64(pair, 8)))
        .find(|(key, _)| *key == Some(AT_SYSINFO_EHDR))
        .and_then(|(_, value)| value)
        .filter(|&value| value != 0)
        .ok_or_else(|| "this process has no vDSO (no AT_SYSINFO_EHDR in its auxv)".to_string())
}

/// `(start, end)` of the `[vdso]` line of `/proc/self/maps`.
fn vdso_mapping() -> Result<(u64, u64), String> {
    let maps = std::fs::File::open("/proc/self/maps")
        .map_err(|e| format!("cannot open /proc/self/maps: {e}"))?;
    for line in BufReader::new(maps).lines() {
        let line = line.map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
        if line.split_whitespace().nth(5) != Some("[vdso]") {
            continue;
        }
        let range = line.split_whitespace().next().unwrap_or_default();
        let parsed = range
            .split_once('-')
            .and_then(|(s, e)| {
                Some((
                    u64::from_str_radix(s, 16).ok()?,
                    u64::from_str_radix(e, 16).ok()?,
                ))
            })
            .filter(|(s, e)| s < e);
        return parsed
            .ok_or_else(|| format!("cannot parse the [vdso] line of /proc/self/maps: {line}"));
    }
    Err("/proc/self/maps has no [vdso] line".into())
}
