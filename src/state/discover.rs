//! Finding an earlier injection inside the target: the state lives there, not in the tool.
//!
//! Two ways in: a vDSO entry that jumps into a page whose neighbour holds our data page (the
//! injection is live), or — after a recover, when the jumps are gone — an anonymous r-x page
//! directly followed by an anonymous rw- page that both carry our magic.

use crate::arch::{Arch, Native};
use crate::error::{Error, Result};
use crate::fake_clock::data_page::{DataPage, PAGE_SIZE};
use crate::fake_clock::{self, DATA_PAGE_OFFSET};
use crate::target::Target;

/// An injection found in a target.
#[derive(Debug, Clone)]
pub struct Existing {
    pub code_addr: u64,
    pub data: DataPage,
    /// Every recorded patch currently holds our jump.
    pub hooks_live: bool,
}

impl Existing {
    pub fn data_addr(&self) -> u64 {
        self.code_addr + DATA_PAGE_OFFSET
    }
}

/// Looks for an injection in `target` (whose vDSO image and maps are current).
pub fn find(target: &Target) -> Result<Option<Existing>> {
    let mut foreign = None;
    for sym in Native::SYMBOLS.0 {
        let Some(dest) = jump_destination(target, sym) else {
            continue;
        };
        let code = dest & !(PAGE_SIZE - 1);
        match read_pages(target, code)? {
            Some(data) => return Ok(Some(with_liveness(target, code, data)?)),
            None => foreign = Some((sym, dest)),
        }
    }
    if let Some((sym, dest)) = foreign {
        return Err(Error::UnsafeToPatch {
            pid: target.pid,
            symbol: sym,
            reason: format!(
                "it already jumps to {dest:#x}, which is not a timeskew trampoline (another tool \
                 such as Chaos Mesh or a debugger has patched this process)"
            ),
        });
    }
    // After a recover the jumps are gone but the pages stay: a page pair of our shape.
    for pair in target.maps.windows(2) {
        let (code, data) = (&pair[0], &pair[1]);
        let shape = code.is_anonymous()
            && data.is_anonymous()
            && code.perms.starts_with("r-x")
            && data.perms.starts_with("rw-")
            && code.end == data.start;
        if !shape {
            continue;
        }
        let code_addr = code.end - PAGE_SIZE;
        if let Some(page) = read_pages(target, code_addr)? {
            return Ok(Some(with_liveness(target, code_addr, page)?));
        }
    }
    Ok(None)
}

/// Where the entry `sym` jumps, if it starts with a jump.
fn jump_destination(target: &Target, sym: &str) -> Option<u64> {
    let s = target.vdso.symbol(sym)?;
    let bytes = target.vdso.slice(s.addr, Native::JUMP_LEN)?;
    Native::decode_jump(bytes, s.addr)
}

/// Reads the code page header and data page at `code`; `None` if they are not ours.
fn read_pages(target: &Target, code: u64) -> Result<Option<DataPage>> {
    let magic = match target.mem.read(code, 8, "read a candidate trampoline page") {
        Ok(m) => m,
        Err(Error::ProcessGone { pid, step }) => return Err(Error::ProcessGone { pid, step }),
        Err(_) => return Ok(None),
    };
    if magic != fake_clock::BLOB_MAGIC {
        return Ok(None);
    }
    let data_addr = code + DATA_PAGE_OFFSET;
    let page = target
        .mem
        .read(data_addr, PAGE_SIZE as usize, "read the timeskew data page")?;
    let data = DataPage::decode(target.pid, data_addr, &page)?;
    if data.code_addr != code || data.vdso_base != target.vdso.base() {
        return Err(Error::CorruptState {
            pid: target.pid,
            addr: data_addr,
            reason: format!(
                "it describes code at {:#x} for a vDSO at {:#x}, but sits beside {code:#x} with \
                 the vDSO at {:#x}",
                data.code_addr,
                data.vdso_base,
                target.vdso.base()
            ),
        });
    }
    Ok(Some(data))
}

/// Whether `bytes`, read at `at`, are our jump: one into the code page at `code_addr`. The one
/// test for "still ours" — a patch someone else wrote over ours is left alone.
pub fn is_our_jump(bytes: &[u8], at: u64, code_addr: u64) -> bool {
    Native::decode_jump(bytes, at).is_some_and(|d| d & !(PAGE_SIZE - 1) == code_addr)
}

/// Whether the vDSO image (as read) still holds our jump at patch `p`.
pub fn jump_in_image(
    target: &Target,
    p: &crate::fake_clock::data_page::Patch,
    code_addr: u64,
) -> bool {
    target
        .vdso
        .slice(p.addr, Native::JUMP_LEN)
        .is_some_and(|b| is_our_jump(b, p.addr, code_addr))
}

fn with_liveness(target: &Target, code_addr: u64, data: DataPage) -> Result<Existing> {
    let hooks_live = !data.patches.is_empty()
        && data
            .patches
            .iter()
            .all(|p| jump_in_image(target, p, code_addr));
    Ok(Existing {
        code_addr,
        data,
        hooks_live,
    })
}
