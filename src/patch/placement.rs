//! Where the trampoline pages go: a free range close enough to the vDSO for `jmp rel32` and
//! for the relocated RIP-relative instructions to still reach the vvar pages.

use crate::arch::{Arch, Native};
use crate::fake_clock::data_page::PAGE_SIZE;
use crate::target::procfs::Mapping;

/// The jump's reach (±2 GiB on x86_64), less a margin for the vvar pages below the vDSO and the
/// size of the vDSO itself.
const REACH: u64 = Native::JUMP_REACH - (64 << 20);
/// Lowest address we consider (above any mmap_min_addr).
const LOW: u64 = 0x1_0000;
/// Top of the user address space that every kernel hands out without asking.
const HIGH: u64 = Native::USER_SPACE_TOP;

/// Candidate start addresses for `len` bytes, nearest to the vDSO first. Each leaves a free
/// guard page on both sides, so the kernel does not merge our pages into a neighbour mapping and
/// a later run can find them as a mapping pair of their own.
pub fn candidates(maps: &[Mapping], vdso_start: u64, vdso_end: u64, len: u64) -> Vec<u64> {
    let mut sorted: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
    sorted.sort_unstable();
    let mut gaps = Vec::new();
    let mut prev_end = LOW;
    for &(start, end) in &sorted {
        if start > prev_end {
            gaps.push((prev_end, start));
        }
        prev_end = prev_end.max(end);
    }
    if HIGH > prev_end {
        gaps.push((prev_end, HIGH));
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (gap_start, gap_end) in gaps {
        let lo = gap_start + PAGE_SIZE;
        let Some(hi) = gap_end.checked_sub(PAGE_SIZE + len) else {
            continue;
        };
        if hi < lo {
            continue;
        }
        // The point of the gap closest to the vDSO.
        let addr = if hi <= vdso_start {
            hi
        } else if lo >= vdso_end {
            lo
        } else {
            continue; // a gap cannot contain the vDSO
        };
        let far = if addr < vdso_start {
            vdso_end - addr
        } else {
            addr + len - vdso_start
        };
        if far <= REACH {
            out.push((far, addr));
        }
    }
    out.sort_unstable();
    out.into_iter().map(|(_, a)| a).take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(start: u64, end: u64) -> Mapping {
        Mapping {
            start,
            end,
            perms: "r--p".into(),
            path: String::new(),
        }
    }

    #[test]
    fn nearest_gap_with_guards() {
        let vdso = (0x7f00_0010_0000, 0x7f00_0010_2000);
        let maps = vec![
            m(0x7f00_0000_0000, 0x7f00_000f_0000),
            m(0x7f00_000f_8000, vdso.0), // vvar right below
            m(vdso.0, vdso.1),
            m(0x7f00_0020_0000, 0x7f00_0030_0000),
        ];
        let c = candidates(&maps, vdso.0, vdso.1, 2 * PAGE_SIZE);
        // Gap above the vDSO: starts one guard page after it.
        assert_eq!(c[0], vdso.1 + PAGE_SIZE);
        // Gap below the vvar pages: ends one guard page before them.
        assert!(c.contains(&(0x7f00_000f_8000 - 3 * PAGE_SIZE)));
        for a in &c {
            for (s, e) in maps.iter().map(|x| (x.start, x.end)) {
                assert!(a + 2 * PAGE_SIZE + PAGE_SIZE <= s || *a >= e + PAGE_SIZE);
            }
        }
    }

    #[test]
    fn too_small_or_too_far_gaps_are_skipped() {
        let vdso = (0x7f00_0010_0000, 0x7f00_0010_2000);
        let maps = vec![
            m(0x1_0000, vdso.0 - 3 * PAGE_SIZE),
            m(vdso.0, vdso.1),
            m(vdso.1 + 3 * PAGE_SIZE, HIGH),
        ];
        assert!(candidates(&maps, vdso.0, vdso.1, 2 * PAGE_SIZE).is_empty());
    }
}
