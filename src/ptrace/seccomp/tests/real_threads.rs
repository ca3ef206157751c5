//! `check` on real threads under real seccomp policies: each action, stacked filters, strict
//! mode.

use super::child::{Lockdown, check_child, filters, refusal, spawn};
use super::*;

#[test]
fn real_no_seccomp() {
    let child = spawn(Lockdown::Nothing, &[]);
    check_child(&child, &[mmap_rw(), munmap()]).unwrap();
}

#[test]
fn real_each_action_on_mmap() {
    use libc::{SECCOMP_FILTER_FLAG_NEW_LISTENER as LISTENER, SECCOMP_RET_ERRNO};
    for (ret, flags) in [
        (libc::SECCOMP_RET_KILL_PROCESS, 0),
        (libc::SECCOMP_RET_KILL_THREAD, 0),
        (libc::SECCOMP_RET_TRAP, 0),
        (SECCOMP_RET_ERRNO | libc::EPERM as u32, 0),
        (SECCOMP_RET_ERRNO | libc::EACCES as u32, 0),
        (libc::SECCOMP_RET_USER_NOTIF, LISTENER),
        (libc::SECCOMP_RET_TRACE, 0),
    ] {
        let child = spawn(
            Lockdown::Filters(vec![(on_call(libc::SYS_mmap, ret), flags)]),
            &[],
        );
        let want = Action::from_ret(ret).describe("mmap");
        assert_eq!(refusal(&child, &[mmap_rw()], "mmap"), want, "{ret:#x}");
        // The refusal names the call that would be refused, not the first one.
        assert_eq!(refusal(&child, &[munmap(), mmap_rw()], "mmap"), want);
        check_child(&child, &[munmap()]).unwrap();
    }
    let logged = spawn(
        filters(vec![on_call(libc::SYS_mmap, libc::SECCOMP_RET_LOG)]),
        &[],
    );
    check_child(&logged, &[mmap_rw(), munmap()]).unwrap();
}

#[test]
fn real_memory_deny_write_execute() {
    let child = spawn(filters(vec![mdwe_filter()]), &[]);
    check_child(
        &child,
        &[mmap_rw(), mmap(libc::PROT_READ | libc::PROT_EXEC), munmap()],
    )
    .unwrap();
    let rwx = mmap(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
    assert!(refusal(&child, &[rwx], "mmap").contains("errno EPERM"));
    let rx = mprotect(libc::PROT_READ | libc::PROT_EXEC);
    assert!(refusal(&child, &[rx], "mprotect").contains("errno EPERM"));
    check_child(&child, &[mprotect(libc::PROT_READ)]).unwrap();
}

#[test]
fn real_instruction_pointer() {
    let child = spawn(filters(vec![ip_filter(IP - 2, IP + 0x1000)]), &[]);
    assert!(refusal(&child, &[mmap_rw()], "mmap").contains("SECCOMP_RET_KILL_PROCESS"));
    let mut elsewhere = mmap_rw();
    elsewhere.ip = IP + 0x1000;
    check_child(&child, &[elsewhere]).unwrap();
}

#[test]
fn real_stacked_filters_newest_first() {
    use libc::SECCOMP_RET_ERRNO as ERRNO;
    let child = spawn(
        filters(vec![
            vec![stmt(RET_K, libc::SECCOMP_RET_LOG)],
            on_call(libc::SYS_mmap, ERRNO | libc::EACCES as u32),
            on_call(libc::SYS_munmap, libc::SECCOMP_RET_TRAP),
            on_call(libc::SYS_mmap, ERRNO | libc::EPERM as u32),
        ]),
        &[],
    );
    // Two ERRNO filters on mmap: the newest one's errno is what the call would get.
    // (PTRACE_SECCOMP_GET_FILTER numbers them oldest first: getting the order wrong
    // reports EACCES here.)
    let r = refusal(&child, &[mmap_rw()], "mmap");
    assert!(r.contains("errno EPERM"), "{r}");
    assert!(refusal(&child, &[munmap()], "munmap").contains("SECCOMP_RET_TRAP"));
    check_child(&child, &[mprotect(libc::PROT_READ)]).unwrap();
}

#[test]
fn real_strict_mode() {
    let child = spawn(Lockdown::Strict, &[]);
    let reason = refusal(&child, &[mmap_rw()], "mmap");
    assert!(reason.contains("seccomp strict mode"), "{reason}");
    // The calls strict mode allows are allowed.
    let write = call("write", libc::SYS_write, [1, 0, 0, 0, 0, 0]);
    check_child(&child, &[write]).unwrap();
}
