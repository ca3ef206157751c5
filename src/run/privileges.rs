//! What a program exec'd under our tracer went without: the kernel ignores setuid/setgid bits
//! and file capabilities when the tracer lacks CAP_SYS_PTRACE (timeskew run by a non-root user).

use crate::target::procfs;

/// CAP_SYS_PTRACE's bit in the capability sets.
const CAP_SYS_PTRACE: u32 = 19;

/// Whether this process has CAP_SYS_PTRACE in its effective set (root normally has).
pub(super) fn has_cap_sys_ptrace() -> bool {
    let status = procfs::own_status().unwrap_or_default();
    status_field(&status, "CapEff:")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// What the program `pid` has just exec'd would have gained and did not: the owner of a
/// setuid file that is not its effective uid, the group of a setgid file that is not its
/// effective gid, file capabilities missing from its permitted set. `None` when nothing.
pub(super) fn privileges_lost(pid: i32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = procfs::exe_metadata(pid).ok()?;
    let status = procfs::status(pid).ok()?;
    // `Uid:`/`Gid:` list real, effective, saved and filesystem ids.
    let effective = |name| {
        status_field(&status, name)?
            .split_whitespace()
            .nth(1)?
            .parse::<u32>()
            .ok()
    };
    let mut lost = Vec::new();
    if meta.mode() & libc::S_ISUID != 0 && effective("Uid:") != Some(meta.uid()) {
        lost.push(format!("its setuid bit (owner uid {})", meta.uid()));
    }
    let setgid = libc::S_ISGID | libc::S_IXGRP;
    if meta.mode() & setgid == setgid && effective("Gid:") != Some(meta.gid()) {
        lost.push(format!("its setgid bit (group gid {})", meta.gid()));
    }
    if let Some(file_caps) = file_capabilities(pid) {
        let permitted = status_field(&status, "CapPrm:")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0);
        let missing = file_caps & !permitted;
        if missing != 0 {
            lost.push(format!(
                "its file capabilities ({})",
                capability_names(missing)
            ));
        }
    }
    (!lost.is_empty()).then(|| lost.join(" and "))
}

/// The permitted set of the file capabilities of the program `pid` runs, if it has any.
fn file_capabilities(pid: i32) -> Option<u64> {
    parse_file_capabilities(&procfs::exe_capability_attr(pid)?)
}

/// `struct vfs_cap_data` (revision 1, 2 or 3, little-endian): the permitted set.
fn parse_file_capabilities(data: &[u8]) -> Option<u64> {
    let word = |i: usize| {
        data.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    match word(0)? & 0xff00_0000 {
        0x0100_0000 => word(1).map(u64::from),
        0x0200_0000 | 0x0300_0000 => Some(u64::from(word(1)?) | u64::from(word(3)?) << 32),
        _ => None,
    }
}

/// `cap_net_raw, cap_sys_admin` for a capability mask.
fn capability_names(mask: u64) -> String {
    const NAMES: [&str; 41] = [
        "cap_chown",
        "cap_dac_override",
        "cap_dac_read_search",
        "cap_fowner",
        "cap_fsetid",
        "cap_kill",
        "cap_setgid",
        "cap_setuid",
        "cap_setpcap",
        "cap_linux_immutable",
        "cap_net_bind_service",
        "cap_net_broadcast",
        "cap_net_admin",
        "cap_net_raw",
        "cap_ipc_lock",
        "cap_ipc_owner",
        "cap_sys_module",
        "cap_sys_rawio",
        "cap_sys_chroot",
        "cap_sys_ptrace",
        "cap_sys_pacct",
        "cap_sys_admin",
        "cap_sys_boot",
        "cap_sys_nice",
        "cap_sys_resource",
        "cap_sys_time",
        "cap_sys_tty_config",
        "cap_mknod",
        "cap_lease",
        "cap_audit_write",
        "cap_audit_control",
        "cap_setfcap",
        "cap_mac_override",
        "cap_mac_admin",
        "cap_syslog",
        "cap_wake_alarm",
        "cap_block_suspend",
        "cap_audit_read",
        "cap_perfmon",
        "cap_bpf",
        "cap_checkpoint_restore",
    ];
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            NAMES
                .get(bit)
                .map_or_else(|| format!("capability {bit}"), |n| n.to_string())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use nix::unistd::getpid;

    use super::*;

    #[test]
    fn file_capabilities_are_parsed_and_named() {
        // setcap cap_net_raw+ep: revision 2, effective flag, permitted bit 13.
        let mut v2 = vec![0x01, 0, 0, 0x02];
        v2.extend([0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_file_capabilities(&v2), Some(1 << 13));
        let mut v3 = v2.clone();
        v3[3] = 0x03;
        v3.extend([0, 0, 0, 0]); // rootid
        v3[12] = 0x01; // permitted bit 32 (cap_mac_override)
        assert_eq!(parse_file_capabilities(&v3), Some(1 << 13 | 1 << 32));
        assert_eq!(parse_file_capabilities(&[0, 0, 0, 0x07]), None);
        assert_eq!(parse_file_capabilities(&[]), None);
        assert_eq!(capability_names(1 << 13), "cap_net_raw");
        assert_eq!(
            capability_names(1 << 21 | 1 << 63),
            "cap_sys_admin, capability 63"
        );
        // A program without setuid bits or capabilities loses nothing.
        assert_eq!(privileges_lost(getpid().as_raw()), None);
        assert!(has_cap_sys_ptrace(), "the tests run as root");
    }
}
