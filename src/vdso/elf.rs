//! The goblin parsing of a vDSO's ELF headers and dynamic symbols, every offset and size checked
//! against the copy's bytes: a hostile or truncated image yields `Err`, never a panic.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::dynamic::{DT_HASH, DT_NULL, DT_STRSZ, DT_STRTAB, DT_SYMENT, DT_SYMTAB};
use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, ELFMAG, ET_DYN};
use goblin::elf::program_header::{PF_X, PT_DYNAMIC, PT_LOAD};
use goblin::elf::section_header::{
    SHF_EXECINSTR, SHN_ABS, SHN_LORESERVE, SHN_UNDEF, SHT_DYNSYM, SHT_NOBITS, SHT_STRTAB,
};
use goblin::elf::{Elf, ProgramHeader, SectionHeader, Sym};

use super::Machine;

/// Size of an ELF64 header, program header, section header, symbol and dynamic entry.
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const DYN_SIZE: usize = 16;

/// Headers of the image, validated against its bytes.
pub(super) struct Parsed<'a> {
    bytes: &'a [u8],
    ctx: Ctx,
    phdrs: Vec<ProgramHeader>,
    shdrs: Vec<SectionHeader>,
    /// `p_vaddr` of the first `PT_LOAD`: the link-time address of the image's first byte.
    load_vaddr: u64,
}

impl<'a> Parsed<'a> {
    pub(super) fn new(bytes: &'a [u8], machine: Machine) -> Result<Parsed<'a>, String> {
        if bytes.len() < EHDR_SIZE {
            return Err(format!(
                "image is {} bytes, shorter than an ELF64 header",
                bytes.len()
            ));
        }
        if &bytes[..ELFMAG.len()] != ELFMAG {
            return Err("no ELF magic at the start of the image".into());
        }
        if bytes[EI_CLASS] != ELFCLASS64 {
            return Err(format!("ELF class {} is not ELFCLASS64", bytes[EI_CLASS]));
        }
        if bytes[EI_DATA] != ELFDATA2LSB {
            return Err(format!(
                "ELF data encoding {} is not little-endian",
                bytes[EI_DATA]
            ));
        }
        let header = Elf::parse_header(bytes).map_err(|e| format!("bad ELF header: {e}"))?;
        if header.e_machine != machine.elf {
            return Err(format!(
                "ELF machine {} is not {} ({})",
                header.e_machine, machine.name, machine.elf
            ));
        }
        if header.e_type != ET_DYN {
            return Err(format!(
                "ELF type {} is not ET_DYN, as a vDSO is",
                header.e_type
            ));
        }
        let ctx = Ctx::new(Container::Big, Endian::Little);

        let phnum = usize::from(header.e_phnum);
        if phnum == 0 {
            return Err("the image has no program headers".into());
        }
        if usize::from(header.e_phentsize) != PHDR_SIZE {
            return Err(format!(
                "program header entry size {} is not {PHDR_SIZE}",
                header.e_phentsize
            ));
        }
        let phoff = table_offset(bytes, header.e_phoff, phnum, PHDR_SIZE, "program headers")?;
        let phdrs = ProgramHeader::parse(bytes, phoff, phnum, ctx)
            .map_err(|e| format!("bad program headers: {e}"))?;

        // e_shnum == 0 means "no section headers" (or an extended count, which no vDSO uses).
        let shnum = usize::from(header.e_shnum);
        let shdrs = if header.e_shoff == 0 || shnum == 0 {
            Vec::new()
        } else {
            if usize::from(header.e_shentsize) != SHDR_SIZE {
                return Err(format!(
                    "section header entry size {} is not {SHDR_SIZE}",
                    header.e_shentsize
                ));
            }
            let shoff = table_offset(bytes, header.e_shoff, shnum, SHDR_SIZE, "section headers")?;
            SectionHeader::parse(bytes, shoff, shnum, ctx)
                .map_err(|e| format!("bad section headers: {e}"))?
        };

        let first_load = phdrs
            .iter()
            .find(|ph| ph.p_type == PT_LOAD)
            .ok_or("the image has no PT_LOAD segment")?;
        if first_load.p_offset != 0 {
            return Err(format!(
                "the first PT_LOAD maps file offset {:#x}, not 0 as in a vDSO",
                first_load.p_offset
            ));
        }
        if first_load.p_filesz > bytes.len() as u64 {
            return Err(format!(
                "the image is truncated: {} bytes, but its first PT_LOAD holds {:#x}",
                bytes.len(),
                first_load.p_filesz
            ));
        }
        let load_vaddr = first_load.p_vaddr;

        Ok(Parsed {
            bytes,
            ctx,
            phdrs,
            shdrs,
            load_vaddr,
        })
    }

    /// Image offset of link-time address `vaddr`, if `len` bytes from there lie in the image.
    fn vaddr_to_offset(&self, vaddr: u64, len: u64) -> Option<u64> {
        let offset = vaddr.checked_sub(self.load_vaddr)?;
        let end = offset.checked_add(len)?;
        (end <= self.bytes.len() as u64).then_some(offset)
    }

    /// `(image offset, length)` of the executable code: `SHF_EXECINSTR` sections, or the
    /// executable `PT_LOAD` segments when there are none.
    pub(super) fn exec_ranges(&self) -> Result<Vec<(u64, u64)>, String> {
        let mut ranges = Vec::new();
        for (index, sh) in self.shdrs.iter().enumerate() {
            if sh.sh_flags & u64::from(SHF_EXECINSTR) == 0 || sh.sh_size == 0 {
                continue;
            }
            if sh.sh_type == SHT_NOBITS {
                return Err(format!(
                    "executable section {index} has no bytes (SHT_NOBITS)"
                ));
            }
            let offset = self
                .vaddr_to_offset(sh.sh_addr, sh.sh_size)
                .ok_or_else(|| {
                    format!(
                        "executable section {index} ({:#x}, {:#x} bytes) lies outside the image",
                        sh.sh_addr, sh.sh_size
                    )
                })?;
            ranges.push((offset, sh.sh_size));
        }
        if ranges.is_empty() {
            for (index, ph) in self.phdrs.iter().enumerate() {
                if ph.p_type != PT_LOAD || ph.p_flags & PF_X == 0 || ph.p_filesz == 0 {
                    continue;
                }
                let offset = self.vaddr_to_offset(ph.p_vaddr, ph.p_filesz).ok_or_else(|| {
                    format!(
                        "executable segment {index} ({:#x}, {:#x} bytes) lies outside the image",
                        ph.p_vaddr, ph.p_filesz
                    )
                })?;
                ranges.push((offset, ph.p_filesz));
            }
        }
        if ranges.is_empty() {
            return Err("the image has no executable section or segment".into());
        }
        Ok(ranges)
    }

    /// `(name, image offset, size)` of every defined, named dynamic symbol.
    pub(super) fn dynamic_symbols(&self) -> Result<Vec<(String, u64, u64)>, String> {
        let (sym_off, count, str_off, str_len) = match self.dynsym_from_sections()? {
            Some(tables) => tables,
            None => self.dynsym_from_dynamic()?,
        };
        let syms = Sym::parse(self.bytes, sym_off, count, self.ctx)
            .map_err(|e| format!("bad dynamic symbol table: {e}"))?;
        // Both tables were bounds-checked by the callers above.
        let strtab = self
            .bytes
            .get(str_off..str_off.saturating_add(str_len))
            .ok_or("dynamic string table lies outside the image")?;

        let mut symbols = Vec::new();
        for (index, sym) in syms.iter().enumerate() {
            let shndx = sym.st_shndx as u64;
            if sym.st_name == 0
                || shndx == u64::from(SHN_UNDEF)
                || shndx == u64::from(SHN_ABS)
                || shndx >= u64::from(SHN_LORESERVE)
            {
                continue;
            }
            let name = strtab
                .get(sym.st_name..)
                .and_then(|tail| tail.iter().position(|&b| b == 0).map(|nul| &tail[..nul]))
                .ok_or_else(|| {
                    format!("dynamic symbol {index} has a name outside the string table")
                })?;
            let Ok(name) = std::str::from_utf8(name) else {
                continue; // cannot match any name we look for
            };
            let offset = self
                .vaddr_to_offset(sym.st_value, sym.st_size)
                .ok_or_else(|| {
                    format!(
                        "dynamic symbol {name} ({:#x}, {} bytes) lies outside the image",
                        sym.st_value, sym.st_size
                    )
                })?;
            symbols.push((name.to_owned(), offset, sym.st_size));
        }
        Ok(symbols)
    }

    /// `(symtab offset, count, strtab offset, strtab length)` from the `SHT_DYNSYM` section.
    fn dynsym_from_sections(&self) -> Result<Option<(usize, usize, usize, usize)>, String> {
        let Some(dynsym) = self.shdrs.iter().find(|sh| sh.sh_type == SHT_DYNSYM) else {
            return Ok(None);
        };
        if dynsym.sh_entsize != SYM_SIZE as u64 {
            return Err(format!(
                ".dynsym entry size {} is not {SYM_SIZE}",
                dynsym.sh_entsize
            ));
        }
        let sym_off = file_range(self.bytes, dynsym.sh_offset, dynsym.sh_size, ".dynsym")?;
        let count = usize::try_from(dynsym.sh_size / SYM_SIZE as u64)
            .map_err(|_| ".dynsym is too large".to_string())?;
        let strtab = usize::try_from(dynsym.sh_link)
            .ok()
            .and_then(|link| self.shdrs.get(link))
            .filter(|sh| sh.sh_type == SHT_STRTAB)
            .ok_or_else(|| {
                format!(
                    ".dynsym links to section {}, which is not a string table",
                    dynsym.sh_link
                )
            })?;
        let str_off = file_range(self.bytes, strtab.sh_offset, strtab.sh_size, ".dynstr")?;
        Ok(Some((sym_off, count, str_off, strtab.sh_size as usize)))
    }

    /// The same tables found through `PT_DYNAMIC` (`DT_SYMTAB`, `DT_STRTAB`, `DT_STRSZ`, and the
    /// symbol count from `DT_HASH`), for images without section headers.
    fn dynsym_from_dynamic(&self) -> Result<(usize, usize, usize, usize), String> {
        let dynamic = self
            .phdrs
            .iter()
            .find(|ph| ph.p_type == PT_DYNAMIC)
            .ok_or("the image has neither a .dynsym section nor a PT_DYNAMIC segment")?;
        let dyn_off = file_range(self.bytes, dynamic.p_offset, dynamic.p_filesz, "PT_DYNAMIC")?;
        let entries = &self.bytes[dyn_off..dyn_off + dynamic.p_filesz as usize];
        let (mut symtab, mut strtab, mut strsz, mut hash) = (None, None, None, None);
        for entry in entries.chunks_exact(DYN_SIZE) {
            let tag = read_u64(entry, 0).unwrap_or(DT_NULL);
            let val = read_u64(entry, 8).unwrap_or(0);
            match tag {
                DT_NULL => break,
                DT_SYMTAB => symtab = Some(val),
                DT_STRTAB => strtab = Some(val),
                DT_STRSZ => strsz = Some(val),
                DT_HASH => hash = Some(val),
                DT_SYMENT if val != SYM_SIZE as u64 => {
                    return Err(format!("DT_SYMENT {val} is not {SYM_SIZE}"));
                }
                _ => {}
            }
        }
        let (Some(symtab), Some(strtab), Some(strsz), Some(hash)) = (symtab, strtab, strsz, hash)
        else {
            return Err("PT_DYNAMIC lacks DT_SYMTAB, DT_STRTAB, DT_STRSZ or DT_HASH".into());
        };
        let hash_off = self
            .vaddr_to_offset(hash, 8)
            .ok_or("DT_HASH lies outside the image")? as usize;
        let nchain = read_u32(self.bytes, hash_off + 4).ok_or("DT_HASH lies outside the image")?;
        let count = nchain as usize;
        let sym_off = self
            .vaddr_to_offset(symtab, count as u64 * SYM_SIZE as u64)
            .ok_or("DT_SYMTAB lies outside the image")? as usize;
        let str_off = self
            .vaddr_to_offset(strtab, strsz)
            .ok_or("DT_STRTAB lies outside the image")? as usize;
        Ok((sym_off, count, str_off, strsz as usize))
    }
}

/// Offset of a table of `count` entries of `entsize` bytes at `offset`, if it fits in `bytes`.
fn table_offset(
    bytes: &[u8],
    offset: u64,
    count: usize,
    entsize: usize,
    what: &str,
) -> Result<usize, String> {
    let size = (count as u64) * (entsize as u64); // both < 2^16
    file_range(bytes, offset, size, what)
}

/// `offset` as a usize when `offset..offset + size` lies inside `bytes`.
fn file_range(bytes: &[u8], offset: u64, size: u64, what: &str) -> Result<usize, String> {
    match offset.checked_add(size) {
        Some(end) if end <= bytes.len() as u64 => Ok(offset as usize),
        _ => Err(format!(
            "{what} ({size:#x} bytes at offset {offset:#x}) extend past the end of the \
             {}-byte image",
            bytes.len()
        )),
    }
}

pub(super) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vdso::VdsoImage;
    use crate::vdso::tests::{ENTRIES, NATIVE, assert_consistent, live};

    /// Little xorshift generator: deterministic "random" mutations without a dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
    fn u16_at(bytes: &[u8], off: usize) -> u64 {
        u64::from(u16::from_le_bytes([bytes[off], bytes[off + 1]]))
    }

    #[test]
    fn non_x86_64_or_non_elf_is_refused() {
        let bytes = live().bytes().to_vec();
        let mut cases: Vec<(usize, u8, &str)> = vec![
            (0, 0x00, "magic"),
            (EI_CLASS, 1, "ELFCLASS64"),
            (EI_DATA, 2, "little-endian"),
            (18, 0xb7, "x86_64"), // e_machine = EM_AARCH64
            (16, 2, "ET_DYN"),    // e_type = ET_EXEC
        ];
        for (off, value, reason) in cases.drain(..) {
            let mut copy = bytes.clone();
            copy[off] = value;
            let err = VdsoImage::parse(0x1000, copy, NATIVE).unwrap_err();
            assert!(err.contains(reason), "byte {off}: {err}");
        }
        // The exact wording, now built from the arch's name and machine number.
        let mut copy = bytes.clone();
        copy[18] = 0xb7;
        let err = VdsoImage::parse(0x1000, copy, NATIVE).unwrap_err();
        assert_eq!(err, "ELF machine 183 is not x86_64 (62)");
    }

    #[test]
    fn truncated_copies_are_refused_without_panicking() {
        let bytes = live().bytes().to_vec();
        // Everything the parser needs: the section header table and the first PT_LOAD.
        let shoff = read_u64(&bytes, 0x28).unwrap();
        let sh_end = shoff + u16_at(&bytes, 0x3c) * u16_at(&bytes, 0x3a);
        let phoff = read_u64(&bytes, 0x20).unwrap() as usize;
        let load_filesz = read_u64(&bytes, phoff + 0x20).unwrap();
        let needed = sh_end.max(load_filesz) as usize;
        assert!(needed <= bytes.len());
        for len in 0..=bytes.len() {
            match VdsoImage::parse(0x7000_0000, bytes[..len].to_vec(), NATIVE) {
                Err(_) => assert!(len < needed, "a complete copy of {len} bytes was refused"),
                Ok(image) => {
                    assert!(len >= needed, "truncated at {len} bytes but accepted");
                    assert_consistent(&image);
                    assert!(image.symbol("__vdso_clock_gettime").is_some());
                }
            }
        }
    }

    #[test]
    fn corrupted_headers_never_panic() {
        let bytes = live().bytes().to_vec();
        let phnum = u16_at(&bytes, 0x38) as usize;
        let header_len = EHDR_SIZE + phnum * PHDR_SIZE;
        for off in 0..header_len {
            for mask in [0x01u8, 0x80, 0xff, 0x7f, 0x10] {
                let mut copy = bytes.clone();
                copy[off] ^= mask;
                if let Ok(image) = VdsoImage::parse(0x7000_0000, copy, NATIVE) {
                    assert_consistent(&image);
                }
            }
        }
        // Hostile values in the size and offset fields of the ELF header.
        for (off, width) in [
            (0x20, 8),
            (0x28, 8),
            (0x36, 2),
            (0x38, 2),
            (0x3a, 2),
            (0x3c, 2),
        ] {
            for value in [u64::MAX, u64::MAX / 2, bytes.len() as u64 - 1, 0xffff] {
                let mut copy = bytes.clone();
                copy[off..off + width].copy_from_slice(&value.to_le_bytes()[..width]);
                let result = VdsoImage::parse(0x7000_0000, copy, NATIVE);
                assert!(result.is_err(), "field at {off:#x} = {value:#x} accepted");
            }
        }
    }

    #[test]
    fn corrupted_section_headers_or_tables_never_panic() {
        let bytes = live().bytes().to_vec();
        let shoff = read_u64(&bytes, 0x28).unwrap() as usize;
        let shnum = u16_at(&bytes, 0x3c) as usize;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let shdr_area = shoff..shoff + shnum * SHDR_SIZE;
        for round in 0..30_000 {
            let mut copy = bytes.clone();
            if round % 3 == 2 {
                // No section headers: the tables are found through PT_DYNAMIC and DT_HASH.
                copy[0x28..0x30].fill(0);
            }
            for _ in 0..1 + rng.below(4) {
                // A third of the mutations hit the section headers, the rest anywhere before.
                let off = if round % 3 == 0 {
                    shdr_area.start + rng.below(shdr_area.len())
                } else {
                    rng.below(shoff)
                };
                match rng.below(3) {
                    0 => copy[off] ^= 1 << rng.below(8),
                    1 => copy[off] = rng.next() as u8,
                    _ => {
                        let end = (off + 8).min(copy.len());
                        let value = rng.next().to_le_bytes();
                        copy[off..end].copy_from_slice(&value[..end - off]);
                    }
                }
            }
            if let Ok(image) = VdsoImage::parse(0xffff_ffff_ffff_0000, copy, NATIVE) {
                assert_consistent(&image);
            }
        }
    }

    #[test]
    fn without_section_headers_uses_segments_and_dynamic() {
        let bytes = live().bytes().to_vec();
        let mut copy = bytes.clone();
        copy[0x28..0x30].fill(0); // e_shoff = 0
        copy[0x3c..0x3e].fill(0); // e_shnum = 0
        let image = VdsoImage::parse(0x5000_0000, copy, NATIVE).expect("parses through PT_DYNAMIC");
        let with = VdsoImage::parse(0x5000_0000, bytes, NATIVE).unwrap();
        for name in ENTRIES {
            assert_eq!(image.symbol(name), with.symbol(name), "{name}");
        }
        // The executable PT_LOAD covers every executable section.
        for &(s, l) in with.exec_ranges() {
            assert!(
                image
                    .exec_ranges()
                    .iter()
                    .any(|&(ps, pl)| s >= ps && s + l <= ps + pl)
            );
        }
        assert_consistent(&image);
    }
}
